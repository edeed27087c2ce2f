"""``pc-ovseg view``: a local web viewer that shows a cloud and answers text queries on it.

    scene = ViewerScene.from_path("result.npz")     # FeatureCloud .npz or any readable cloud
    # or ViewerScene.from_feature_cloud(fc, query_engine=QueryEngine(fc, text_encoder=enc))
    server = start_server(scene)                     # 127.0.0.1, free port, daemon thread
    print(server.url); ...; server.shutdown()

The page (static/) uses three.js from npm, vendored in static/vendor/ so it works offline.
"""
from .browser import BrowserError, screenshot
from .scene import ViewerScene
from .server import ViewerServer, start_server

__all__ = ["BrowserError", "ViewerScene", "ViewerServer", "screenshot", "start_server"]
