"""Benchmark datasets in their official layouts (one module per dataset, one registry)."""
from .base import DATASETS, Dataset, GTScene, get_dataset, register_dataset, split_file

__all__ = ["DATASETS", "Dataset", "GTScene", "get_dataset", "register_dataset", "split_file"]


def _load_all():
    """Import every dataset module so each registers itself."""
    import importlib
    for mod in ("scannet", "matterport", "s3dis", "sensaturban", "semantickitti"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # a module still being written must not hide the others
            if exc.name != f"{__name__}.{mod}":
                raise
