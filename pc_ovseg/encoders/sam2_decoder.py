"""SAM 2's mask decoder for many point prompts on one image, with the same weights and the same
mathematics as ``sam2.modeling.sam.mask_decoder.MaskDecoder`` (multimask output), rearranged so
that a CPU does far less work per prompt.

The package's decoder repeats the image embedding once per prompt and runs its two-way transformer
on every copy. Here:

* what only depends on the image (the image tokens' projections in the first layer, the
  positional encoding's projections in every layer) is computed once per image;
* attention between a prompt's 8 tokens and the 4096 image tokens never projects the image
  tokens: the queries are mapped back through the key projection instead
  (``q . (Wk k + b) = (Wk^T q) . k + q . b``), and a softmax-weighted sum of the image tokens is
  projected once per token instead of projecting every image token (``sum a (Wv k + b) =
  Wv (sum a k) + b``, as the weights sum to 1); the image-to-token output projection is applied to
  the 8 value vectors before they are mixed (``Wo sum a v = sum a (Wo v)``);
* the mask quality (IoU) head needs only the tokens, so the best of the 3 masks is chosen, and
  prompts below the IoU threshold are dropped, before anything is upsampled; the upscaling
  (transposed convolutions) runs only for the prompts kept, and only their chosen mask is formed.

Checked against the package's ``SAM2ImagePredictor`` in tests/test_sam2.py.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _heads(x, h: int):
    """(..., L, C) -> (..., h, L, C/h)"""
    *b, L, C = x.shape
    return x.reshape(*b, L, h, C // h).transpose(-2, -3)


def _softmax_small(s):
    """Softmax over a short last axis (a prompt's 8 tokens): torch's kernel is ~5x slower there."""
    s = s - s.amax(-1, keepdim=True)
    s = s.exp_()
    return s.div_(s.sum(-1, keepdim=True))


def _layer_norm_2d(ln, x):
    """SAM's LayerNorm2d (over channels of (B, C, H, W)) as one fused layer_norm on channels-last."""
    y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), ln.weight, ln.bias, ln.eps)
    return y.permute(0, 3, 1, 2)


def _merge(x):
    """(..., h, L, d) -> (..., L, h*d)"""
    *b, h, L, d = x.shape
    return x.transpose(-2, -3).reshape(*b, L, h * d)


class SharedImage:
    """Per-image parts of the decoder: image tokens, positional encoding and their projections."""

    def __init__(self, dec, image_embed, dense_embed, image_pe, high_res=None):
        tr = dec.transformer
        src = (image_embed + dense_embed).flatten(2).transpose(1, 2)[0]   # (N, C)
        pe = image_pe.flatten(2).transpose(1, 2)[0]                        # (N, C)
        self.hw = image_embed.shape[-2:]
        self.src, self.pe, self.high_res = src, pe, high_res
        l0 = tr.layers[0]
        kpos = src + pe
        a = l0.cross_attn_token_to_image
        self.l0_k = _heads(a.k_proj(kpos), a.num_heads)                   # (H, N, d)
        self.l0_v = _heads(a.v_proj(src), a.num_heads)
        a = l0.cross_attn_image_to_token
        self.l0_q = _heads(a.q_proj(kpos), a.num_heads)
        # the positional encoding's share of the later layers' image-side projections (with bias)
        self.pe_k = [_heads(ly.cross_attn_token_to_image.k_proj(pe), ly.cross_attn_token_to_image.num_heads)
                     for ly in tr.layers]
        self.pe_q = [_heads(ly.cross_attn_image_to_token.q_proj(pe), ly.cross_attn_image_to_token.num_heads)
                     for ly in tr.layers]
        a = tr.final_attn_token_to_image
        self.pe_k_final = _heads(a.k_proj(pe), a.num_heads)


def _token_to_image(att, queries, keys, pe_k):
    """Tokens (B, T, C) attend to per-prompt image tokens (B, N, C); ``pe_k`` = k_proj(pe) per head
    (with the bias). Never projects the N image tokens."""
    H = att.num_heads
    B, T, _ = queries.shape
    q = _heads(att.q_proj(queries), H)                                    # (B, H, T, d)
    d = q.shape[-1]
    q = q * d ** -0.5
    Wk = att.k_proj.weight.reshape(H, d, -1)                              # (H, d, C)
    r = torch.einsum("bhtd,hdc->bhtc", q, Wk).reshape(B, H * T, -1)      # queries mapped back to C
    s = torch.bmm(r, keys.transpose(1, 2)).reshape(B, H, T, -1) + q @ pe_k.transpose(-1, -2)
    a = torch.softmax(s, -1).reshape(B, H * T, -1)                        # (B, H*T, N)
    m = torch.bmm(a, keys).reshape(B, H, T, -1)                           # weighted sums of image tokens
    Wv = att.v_proj.weight.reshape(H, d, -1)
    o = torch.einsum("bhtc,hdc->bhtd", m, Wv) + att.v_proj.bias.reshape(H, 1, d)
    return att.out_proj(_merge(o))


def _token_to_image_shared(att, queries, k, v):
    """Layer 0: image keys and values are the same for every prompt (``k``, ``v``: (H, N, d))."""
    q = _heads(att.q_proj(queries), att.num_heads)
    a = torch.softmax((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2), -1)
    return att.out_proj(_merge(a @ v))


def _image_to_token(att, keys, queries_pos, queries, pe_q, shared_q=None):
    """Image tokens attend to a prompt's T tokens: -> (B, N, C) update, before the residual.
    ``keys`` (B, N, C) per prompt, or None with ``shared_q`` (H, N, d) in layer 0."""
    H = att.num_heads
    B, T, _ = queries.shape
    k = _heads(att.k_proj(queries_pos), H)                                 # (B, H, T, d)
    v = _heads(att.v_proj(queries), H)
    d = k.shape[-1]
    k = k * d ** -0.5
    if shared_q is not None:
        s = shared_q @ k.transpose(-1, -2)                                 # (B, H, N, T)
        s = s.permute(0, 2, 1, 3)                                          # (B, N, H, T)
    else:
        Wq = att.q_proj.weight.reshape(H, d, -1)
        r = torch.einsum("bhtd,hdc->bhtc", k, Wq).reshape(B, H * T, -1)
        s = torch.bmm(keys, r.transpose(1, 2)).reshape(B, -1, H, T) + (pe_q @ k.transpose(-1, -2)).permute(0, 2, 1, 3)
    a = _softmax_small(s).reshape(B, -1, H * T)                            # (B, N, H*T)
    Wo = att.out_proj.weight.reshape(-1, H, d)                             # (C, H, d)
    u = torch.einsum("bhtd,chd->bhtc", v, Wo).reshape(B, H * T, -1)       # out_proj of each value
    return torch.bmm(a, u) + att.out_proj.bias


def transformer_tokens(dec, img: SharedImage, tokens):
    """The two-way transformer for B prompts: (queries (B, T, C), image tokens (B, N, C))."""
    tr = dec.transformer
    pos = tokens
    queries, keys = tokens, None
    for i, ly in enumerate(tr.layers):
        if ly.skip_first_layer_pe:
            queries = ly.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + pos
            queries = queries + ly.self_attn(q=q, k=q, v=queries)
        queries = ly.norm1(queries)
        if keys is None:
            att = _token_to_image_shared(ly.cross_attn_token_to_image, queries + pos, img.l0_k, img.l0_v)
        else:
            att = _token_to_image(ly.cross_attn_token_to_image, queries + pos, keys, img.pe_k[i])
        queries = ly.norm2(queries + att)
        queries = ly.norm3(queries + ly.mlp(queries))
        if keys is None:
            upd = _image_to_token(ly.cross_attn_image_to_token, None, queries + pos, queries, None, img.l0_q)
            keys = ly.norm4(img.src + upd)
        else:
            upd = _image_to_token(ly.cross_attn_image_to_token, keys, queries + pos, queries, img.pe_q[i])
            keys = ly.norm4(keys + upd)
    att = _token_to_image(tr.final_attn_token_to_image, queries + pos, keys, img.pe_k_final)
    return tr.norm_final_attn(queries + att), keys


def decode_points(model, img: SharedImage, coords, pred_iou_thresh: float | None = None):
    """Point prompts (B, 1, 2) in model-input pixels -> (best low-res logits (K, 4h, 4w) of the
    prompts kept, their IoU (K,), their index (K,), all multimask IoUs (B, 3)). Kept = best
    predicted IoU >= ``pred_iou_thresh`` (None: all)."""
    dec = model.sam_mask_decoder
    labels = torch.ones(coords.shape[:2], dtype=torch.int, device=coords.device)
    sparse, _ = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    s = 1 if dec.pred_obj_scores else 0
    out_tok = [dec.obj_score_token.weight] if dec.pred_obj_scores else []
    out_tok = torch.cat(out_tok + [dec.iou_token.weight, dec.mask_tokens.weight], 0)
    tokens = torch.cat((out_tok.unsqueeze(0).expand(sparse.size(0), -1, -1), sparse), 1)
    hs, keys = transformer_tokens(dec, img, tokens)
    iou = dec.iou_prediction_head(hs[:, s])[:, 1:]                         # multimask: masks 1..3
    best_iou, best = iou.max(1)
    idx = torch.arange(len(best), device=best.device)
    if pred_iou_thresh is not None:
        idx = idx[best_iou >= pred_iou_thresh]
    if len(idx) == 0:
        h, w = img.hw
        return keys.new_zeros((0, 4 * h, 4 * w)), best_iou[idx], idx, iou
    B, (h, w) = len(idx), img.hw
    src = keys[idx].transpose(1, 2).reshape(B, -1, h, w)
    if dec.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = img.high_res
        up = act1(_layer_norm_2d(ln1, dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
    else:
        up = dec.output_upscaling(src)
    tok = hs[idx, s + 1 + 1 + best[idx]]                                   # the chosen mask token
    hyper = torch.stack([mlp(tok) for mlp in dec.output_hypernetworks_mlps], 1)  # (B, 4, c)
    hyper = hyper[torch.arange(B, device=tok.device), 1 + best[idx]]      # its own hypernetwork
    c = up.shape[1]
    logits = torch.bmm(hyper[:, None], up.reshape(B, c, -1)).reshape(B, *up.shape[-2:])
    return logits, best_iou[idx], idx, iou
