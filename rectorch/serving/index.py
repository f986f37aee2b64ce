"""The FAISS item index as serving uses it: search with the tuned parameters, and read item vectors."""

from pathlib import Path

import faiss
import numpy as np

from rectorch.serving.manifest import BundleError


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Set ``nprobe=…``/``efSearch=…`` (comma-separated, FAISS ``ParameterSpace`` syntax); ``""`` = none."""
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)


class ItemIndex:
    """A loaded FAISS index whose row ``r`` is catalog row ``r``.

    Args:
        path: ``faiss.write_index`` file.
        search_params: tuned search parameters from the manifest.
        threads: OpenMP threads FAISS may use.
    """

    def __init__(self, path: Path, search_params: str, threads: int = 1) -> None:
        faiss.omp_set_num_threads(threads)
        try:
            self.index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise BundleError(f"cannot read FAISS index {path.name}: {error}") from error
        apply_search_params(self.index, search_params)
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.make_direct_map()

    @property
    def size(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``n`` rows per query by inner product; missing results have row -1.

        Shapes:
            queries: ``(B, D)`` → scores ``(B, n)``, rows ``(B, n)``.
        """
        return self.index.search(queries, min(n, self.size))

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Shapes: ``rows`` ``(n,)`` → ``(n, D)`` stored item vectors."""
        return self.index.reconstruct_batch(np.asarray(rows, np.int64))
