"""Text queries against per-point features: labels, heatmaps, objects.

A ``QueryEngine`` is built once per feature cloud (features moved to the compute device once),
then each query costs one matmul: set the scene once, query cheaply, as SAM's predictor does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .data import FeatureCloud
from .labels import norm_name

#: LERF's canonical negatives: a query is relevant where it beats each of these.
CANONICAL_NEGATIVES = ("object", "things", "stuff", "texture")
#: Vocabulary entries treated as background: they take points but are never "objects".
BACKGROUND_NAMES = frozenset({"other", "others", "background", "otherfurniture", "other furniture", "ignore"})


def label_space_embeddings(class_names: list[str], texts: list[str]) -> np.ndarray:
    """One-hot text embeddings for features that live in a label space (oracle, label maps)."""
    index: dict[str, int] = {}
    for i, n in enumerate(class_names):  # first class of a name wins, as in LabelEncoder / LabelSet.id_of
        index.setdefault(norm_name(n), i)
    out = np.zeros((len(texts), len(class_names)), np.float32)
    for t, text in enumerate(texts):
        i = index.get(norm_name(text))
        if i is not None:
            out[t, i] = 1.0
    return out


@dataclass
class LabelResult:
    labels: np.ndarray          # (N,) int32 index into vocabulary, -1 = unseen / below threshold
    scores: np.ndarray          # (N,) float32 softmax probability of the winning class
    similarity: np.ndarray      # (N,) float32 cosine similarity of the winning class
    vocabulary: list[str] = field(default_factory=list)


@dataclass
class Object3D:
    point_ids: np.ndarray       # (M,) int64
    score: float                # mean heatmap value
    bbox_min: np.ndarray        # (3,) world coordinates
    bbox_max: np.ndarray

    def to_dict(self) -> dict:
        return {"points": int(len(self.point_ids)), "score": round(float(self.score), 4),
                "bbox_min": self.bbox_min.tolist(), "bbox_max": self.bbox_max.tolist()}


@dataclass
class InstanceLabels:
    labels: np.ndarray          # (K,) position in names
    confidence: np.ndarray      # (K,) probability of that class
    names: list
    top: list                   # per instance [(name, probability)] best first


@dataclass
class Instance3D:
    """One instance answering a text query."""

    id: int
    point_ids: np.ndarray
    score: float                # relevance x proposal score: the ranking
    relevance: float
    proposal_score: float
    bbox_min: np.ndarray
    bbox_max: np.ndarray
    views: list

    def to_dict(self) -> dict:
        return {"id": self.id, "points": int(len(self.point_ids)), "score": round(self.score, 4),
                "relevance": round(self.relevance, 4), "proposal_score": round(self.proposal_score, 4),
                "bbox_min": self.bbox_min.round(4).tolist(), "bbox_max": self.bbox_max.round(4).tolist(),
                "views": self.views}


class QueryEngine:
    """Answers text queries on one FeatureCloud.

    Text goes through the encoder named by ``fc.encoder`` (with prompt templates), or, for
    label-space features (``fc.class_names`` set), each class name is its own one-hot embedding.
    Text embeddings are cached on disk (``text_cache``: True = the user cache,
    pc_ovseg.encoders.templates.text_cache_dir(); a folder; or None), and the encoder is built
    only when a text misses that cache, so a repeated query never loads CLIP.
    """

    def __init__(self, fc: FeatureCloud, *, device: str | None = None, temperature: float = 100.0,
                 text_encoder=None, text_cache: bool | str | os.PathLike | None = True):
        from .encoders.templates import text_cache_dir
        self.fc = fc
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.temperature = temperature
        self._text_encoder = text_encoder
        self._cache_dir = text_cache_dir() if text_cache is True else (text_cache or None)
        # fp16 on GPU; bf16 on CPU, where oneDNN's bf16 GEMM (AMX/AVX512-BF16) reads half the
        # bytes of fp32 -- a query over 1M x 512 features is memory-bound.
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        self._feats = torch.from_numpy(np.ascontiguousarray(fc.features)).to(self.device, dtype)
        self._seen = torch.from_numpy(fc.seen).to(self.device)
        self._text_cache: dict[str, np.ndarray] = {}

    # -- text ---------------------------------------------------------------------------------
    #: Most distinct texts one call embeds (more is an InputError): CLIP on a CPU takes about a
    #: minute per 10,000 names.
    max_texts = 20_000
    #: Texts per text-encoder call; more than one batch shows a progress bar.
    embed_batch = 256

    def embed(self, texts: list[str], *, progress: bool | None = None) -> np.ndarray:
        """(T, D) L2-normalised text embeddings in the features' space (cached per text).

        Texts not yet cached go through the encoder ``embed_batch`` at a time, with a tqdm bar on
        stderr when there is more than one batch (``progress``: None = if stderr is a terminal).
        """
        unique = list(dict.fromkeys(texts))
        if len(unique) > self.max_texts:
            from .errors import InputError
            raise InputError(None, f"a vocabulary of {len(unique):,} names is more than the "
                                   f"{self.max_texts:,} a query can embed")
        # batches of the call's own texts, not of those this engine lacks: the same call then
        # makes the same disk-cache entries, whatever was queried before
        n = self.embed_batch
        batches = [b for b in (unique[i:i + n] for i in range(0, len(unique), n))
                   if any(t not in self._text_cache for t in b)]
        if batches:
            self._embed_batches(batches, progress)
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, self.fc.features.shape[1]), np.float32)

    def _embed_batches(self, batches: list[list[str]], progress: bool | None) -> None:
        from tqdm.auto import tqdm
        if len(batches) == 1 or progress is False:
            disable = True
        else:
            disable = None if progress is None else False  # tqdm: None = only on a terminal
        with tqdm(total=sum(map(len, batches)), desc="text embeddings", unit="name", disable=disable,
                  leave=False) as bar:
            for batch in batches:
                if self.fc.class_names:
                    emb = label_space_embeddings(self.fc.class_names, batch)
                else:
                    emb = self._encode_text(batch)
                if emb.shape[1] != self.fc.text_dim:  # a result edited or paired with another model
                    from .errors import InputError
                    raise InputError(None, f"the features are {self.fc.text_dim}-d but encoder "
                                           f"{self.fc.encoder!r} embeds text as {emb.shape[1]}-d: the result was "
                                           "not made with this encoder")
                if self.fc.basis is not None:  # compressed features: the text into their subspace
                    emb = np.asarray(emb, np.float32) @ self.fc.basis
                for t, e in zip(batch, emb):
                    self._text_cache[t] = e.astype(np.float32)
                bar.update(len(batch))

    def load_text_encoder(self):
        """The text encoder, built on first use; None for label-space features (they need none)."""
        if self._text_encoder is None and not self.fc.class_names:
            from .encoders import get_encoder
            self._text_encoder = get_encoder(self.fc.encoder, device=str(self.device))
        return self._text_encoder

    def _encode_text(self, texts: list[str]) -> np.ndarray:
        from .encoders.templates import cached_text_embeddings, encode_text_with_templates
        if self._text_encoder is None:
            hit = cached_text_embeddings(self.fc.encoder, texts, cache_dir=self._cache_dir)
            if hit is not None:
                return hit
        return np.asarray(encode_text_with_templates(self.load_text_encoder(), texts, cache_dir=self._cache_dir), np.float32)

    def _sims(self, emb: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(emb).to(self.device, self._feats.dtype)
        return (self._feats @ t.T).float()

    #: Similarities labelling holds at once: points go through ``label_block // texts`` at a
    #: time, so 1M points x 10,000 names take 256 MB blocks, not a 40 GB matrix.
    label_block = 1 << 26

    # -- queries ------------------------------------------------------------------------------
    def labels(self, vocabulary, *, min_similarity: float | None = None) -> LabelResult:
        """Per-point label over a vocabulary; unseen points (and those below the threshold) get -1.

        This is the one labelling rule (run, query and eval all label through it, so a result
        gives the same labels by every route). ``vocabulary`` is a list of class names or a
        LabelSet (pc_ovseg.labels): text features then score each class by its best prompt, so a
        class is found by any of its synonyms; label-space features (``fc.class_names``) are
        queried with the class names themselves. Labels are positions in the class names.
        """
        names, t, owner = self._class_texts(vocabulary)
        n = len(self._feats)
        labels = torch.empty(n, dtype=torch.int32, device=self.device)
        score = torch.empty(n, dtype=torch.float32, device=self.device)
        best_sim = torch.empty(n, dtype=torch.float32, device=self.device)
        step = max(1, self.label_block // len(t))
        for a in range(0, n, step):  # rows are independent: blocks give the same answer as one
            sims = self._class_sims(self._feats[a:a + step], t, owner, len(names))
            probs = torch.softmax(sims * self.temperature, dim=1)
            bs, lab = sims.max(dim=1)
            best_sim[a:a + step], labels[a:a + step] = bs, lab
            score[a:a + step] = probs.gather(1, lab[:, None])[:, 0]
        labels[~self._seen] = -1
        if min_similarity is not None:
            labels[best_sim < min_similarity] = -1
        score[~self._seen] = 0
        return LabelResult(labels.cpu().numpy(), score.cpu().numpy(), best_sim.cpu().numpy(), names)

    def _class_texts(self, vocabulary):
        """Class names, their prompts' embeddings and which class owns each prompt (None: one each)."""
        names = list(getattr(vocabulary, "names", vocabulary))
        if not names:
            raise ValueError("empty vocabulary")
        by_prompt = hasattr(vocabulary, "prompt_lists") and not self.fc.class_names
        prompts = [ps or [n] for n, ps in zip(names, vocabulary.prompt_lists())] if by_prompt else [[n] for n in names]
        t = torch.from_numpy(self.embed([p for ps in prompts for p in ps])).to(self.device, self._feats.dtype)
        owner = None
        if len(t) > len(names):  # a class scores its best prompt
            owner = torch.repeat_interleave(torch.arange(len(names), device=self.device),
                                            torch.tensor([len(ps) for ps in prompts], device=self.device))
        return names, t, owner

    def _class_sims(self, feats: torch.Tensor, t: torch.Tensor, owner, n_names: int) -> torch.Tensor:
        sims = (feats.to(t.dtype) @ t.T).float()
        if owner is not None:
            best = torch.full((len(sims), n_names), -torch.inf, device=self.device)
            sims = best.scatter_reduce(1, owner.expand(len(sims), -1), sims, "amax", include_self=False)
        return sims

    # -- instances (pc_ovseg.instances) ----------------------------------------------------------
    def _instance_feats(self, inst) -> torch.Tensor:
        if inst.features is None or inst.features.shape[1] != self._feats.shape[1]:
            from .errors import InputError
            raise InputError(None, f"the instances' features are {None if inst.features is None else inst.features.shape[1]}"
                                   f"-d, the point features {self._feats.shape[1]}-d (made from another result?)")
        return torch.from_numpy(np.asarray(inst.features, np.float32)).to(self.device, self._feats.dtype)

    def label_instances(self, inst, vocabulary, *, k: int = 5) -> "InstanceLabels":
        """Closed-vocabulary instance labelling: each instance's class (by the same prompt rule as
        points), its probability and its top-k classes."""
        names, t, owner = self._class_texts(vocabulary)
        if len(inst) == 0:
            return InstanceLabels(np.zeros(0, np.int64), np.zeros(0, np.float32), names, [])
        sims = self._class_sims(self._instance_feats(inst), t, owner, len(names))
        probs = torch.softmax(sims * self.temperature, dim=1).cpu().numpy()
        lab = probs.argmax(1)
        top = [[(names[j], float(p[j])) for j in np.argsort(-p)[:k]] for p in probs]
        return InstanceLabels(lab, probs[np.arange(len(lab)), lab].astype(np.float32), names, top)

    def instances(self, text: str, inst, negatives=CANONICAL_NEGATIVES, *, min_relevance: float = 0.5,
                  top: int | None = None) -> list["Instance3D"]:
        """Instances ranked for a text query: relevancy of the instance's feature (as points are
        scored, so 0.5 = no preference over the negatives) times the proposal's own score."""
        if len(inst) == 0:
            return []
        sims = (self._instance_feats(inst) @ torch.from_numpy(self.embed([text, *negatives])).to(
            self.device, self._feats.dtype).T).float()
        diff = sims[:, 0] - sims[:, 1:].amax(dim=1) if len(negatives) else sims[:, 0]
        rel = torch.sigmoid(diff * 10.0).cpu().numpy()
        score = rel * inst.scores
        order = [int(k) for k in np.argsort(-score, kind="stable") if rel[k] > min_relevance][:top]
        members = inst.member_lists()
        # boxes stored with the instances (a tiled cloud's), else from this cloud's points
        boxes = inst.boxes() if inst.box_min is not None else None
        out = []
        for k in order:
            if boxes is not None:
                lo, hi = boxes[k]
            else:
                p = self.fc.cloud.xyz[members[k]].astype(np.float64) + self.fc.cloud.origin
                lo, hi = p.min(0), p.max(0)
            out.append(Instance3D(k, members[k], float(score[k]), float(rel[k]), float(inst.scores[k]),
                                  lo, hi, list(inst.views[k][:5]) if k < len(inst.views) else []))
        return out

    def relevancy(self, text: str, negatives=CANONICAL_NEGATIVES, *, temperature: float = 10.0) -> np.ndarray:
        """LERF relevancy: min over negatives of softmax(query vs negative); 0.5 = no preference.

        softmax([q, n]) for the query is sigmoid(q - n), so the minimum over negatives is
        sigmoid(q - max(n)): no (N, T) softmax.
        """
        sims = self._sims(self.embed([text, *negatives]))  # (N, 1 + negatives)
        diff = sims[:, 0] - sims[:, 1:].amax(dim=1) if len(negatives) else sims[:, 0]
        rel = torch.sigmoid(diff * temperature)
        rel.masked_fill_(~self._seen, 0.0)
        return rel.cpu().numpy()

    def heatmap(self, text: str, negatives=CANONICAL_NEGATIVES) -> np.ndarray:
        """Relevancy mapped to [0, 1]: 0 where the query does not beat the negatives."""
        rel = self.relevancy(text, negatives)
        return np.clip((rel - 0.5) * 2.0, 0.0, 1.0)

    def topk(self, point_id: int, vocabulary: list[str], k: int = 5) -> list[tuple[str, float]]:
        """The k best classes of one point with their probabilities."""
        f = self._feats[int(point_id)].float()
        sims = torch.from_numpy(self.embed(list(vocabulary))).to(self.device) @ f
        probs = torch.softmax(sims * self.temperature, 0).cpu().numpy()
        order = np.argsort(-probs)[:k]
        return [(vocabulary[i], float(probs[i])) for i in order]

    def objects(self, text: str, *, threshold: float = 0.5, eps: float | None = None,
                min_points: int = 20) -> list[Object3D]:
        """Points whose heatmap exceeds ``threshold``, split into connected objects with boxes."""
        heat = self.heatmap(text)
        return group_objects(self.fc, heat, threshold=threshold, eps=eps, min_points=min_points)


def read_queries(path: str | os.PathLike) -> list[str]:
    """Queries from a text file, one per line; blank lines and ``#`` comment lines are skipped."""
    from .errors import InputError, check_input_path
    p = check_input_path(path)
    try:
        with open(p, encoding="utf-8-sig") as f:
            lines = [s.strip() for s in f.read().splitlines()]
    except UnicodeDecodeError:
        raise InputError(p, "not a UTF-8 text file of queries") from None
    except OSError as err:
        raise InputError(p, f"cannot read: {err.strerror or err}") from None
    queries = [s for s in lines if s and not s.startswith("#")]
    if not queries:
        raise InputError(p, "holds no queries (one per line; blank lines and # comments are skipped)")
    return queries


def group_objects(fc: FeatureCloud, heat: np.ndarray, *, threshold: float = 0.5, eps: float | None = None,
                  min_points: int = 20) -> list[Object3D]:
    """Connected components of the selected points on a voxel grid of size ``eps`` (26-connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from . import native

    sel = np.flatnonzero(heat >= threshold)
    if len(sel) == 0:
        return []
    xyz = fc.cloud.xyz[sel]
    if eps is None:
        eps = _default_eps(fc.cloud.xyz)
    coords, inverse, _, _ = native.voxelize(xyz, eps)
    c = coords.astype(np.int64) - coords.min(0)
    span = c.max(0) + 3
    key = ((c[:, 0] + 1) * span[1] + (c[:, 1] + 1)) * span[2] + (c[:, 2] + 1)
    order = np.argsort(key)
    sorted_keys = key[order]
    rows, cols = [], []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                if (dx, dy, dz) <= (0, 0, 0):
                    continue  # each undirected pair once
                nk = key + (dx * span[1] + dy) * span[2] + dz
                pos = np.searchsorted(sorted_keys, nk)
                pos = np.minimum(pos, len(sorted_keys) - 1)
                hit = sorted_keys[pos] == nk
                rows.append(np.flatnonzero(hit)); cols.append(order[pos[hit]])
    r = np.concatenate(rows); cl = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), np.int8), (r, cl)), shape=(len(c), len(c)))
    n_comp, comp = connected_components(graph, directed=False)
    point_comp = comp[inverse]
    objs = []
    for k in range(n_comp):
        members = sel[point_comp == k]
        if len(members) < min_points:
            continue
        p = fc.cloud.xyz[members].astype(np.float64) + fc.cloud.origin
        objs.append(Object3D(members, float(heat[members].mean()), p.min(0), p.max(0)))
    objs.sort(key=lambda o: -len(o.point_ids) * o.score)
    return objs


def _default_eps(xyz: np.ndarray) -> float:
    """About three times the median point spacing (estimated on a sample)."""
    from scipy.spatial import cKDTree
    if len(xyz) < 2:
        return 0.05
    rng = np.random.default_rng(0)
    sample = xyz[rng.choice(len(xyz), min(len(xyz), 2000), replace=False)]
    d, _ = cKDTree(xyz).query(sample, k=2)
    return float(max(3.0 * np.median(d[:, 1]), 1e-3))
