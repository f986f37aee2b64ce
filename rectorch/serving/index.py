"""The FAISS item index as serving uses it: search with the tuned parameters, and read item vectors."""

import faiss
import numpy as np

from rectorch.serving.manifest import BundleError, show

_CHECK_ROWS = 65_536  # rows reconstructed per step when checking that every item vector is finite


def apply_search_params(index: faiss.Index, params: str) -> None:
    """Set ``nprobe=…``/``efSearch=…`` (comma-separated, FAISS ``ParameterSpace`` syntax); ``""`` = none."""
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)


def faiss_reason(error: Exception) -> str:
    """The last clause of a FAISS error (its C++ location left out), one line."""
    return show(str(error).strip().splitlines()[-1].rsplit(": ", 1)[-1] if str(error).strip() else error, 160)


class ItemIndex:
    """A loaded FAISS index whose row ``r`` is catalog row ``r``.

    Args:
        index: an inner-product FAISS index (IVF indexes get a direct map for :meth:`vectors`; a refined
            index reads them from its refinement codes and needs none).
    """

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        ivf = faiss.try_extract_index_ivf(index)
        if ivf is not None and not isinstance(index, faiss.IndexRefine):
            ivf.make_direct_map()

    @classmethod
    def from_bytes(
        cls, name: str, data: bytes, search_params: str, num_items: int, dim: int, threads: int = 1
    ) -> "ItemIndex":
        """Deserialize ``faiss.write_index`` bytes and check them against the manifest.

        Raises:
            BundleError: unreadable bytes, a non inner-product metric, a size or width other than the
                manifest's, search parameters the index does not take, or a non-finite item vector.
        """
        faiss.omp_set_num_threads(threads)
        try:
            index = faiss.deserialize_index(np.frombuffer(data, np.uint8))
        except (RuntimeError, MemoryError, ValueError) as error:
            raise BundleError(f"{name} is not a readable FAISS index: {faiss_reason(error)}") from None
        if index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise BundleError(f"{name} must be an inner-product index, its metric type is {index.metric_type}")
        if (index.ntotal, index.d) != (num_items, dim):
            raise BundleError(
                f"{name} holds {index.ntotal} vectors of width {index.d}, the manifest says num_items={num_items}, "
                f"dim={dim}"
            )
        try:
            apply_search_params(index, search_params)
        except RuntimeError as error:
            raise BundleError(
                f"manifest.json key 'index.search_params' {search_params!r} does not apply to {name} "
                f"({type(index).__name__}): {faiss_reason(error)}"
            ) from None
        loaded = cls(index)
        loaded.check_vectors(name)
        return loaded

    def check_vectors(self, name: str) -> None:
        """Every stored item vector can be read back and is finite (so no request meets a NaN score)."""
        for start in range(0, self.size, _CHECK_ROWS):
            rows = np.arange(start, min(start + _CHECK_ROWS, self.size))
            try:
                vectors = self.vectors(rows)
            except RuntimeError as error:
                raise BundleError(f"{name}: item vectors cannot be read back: {faiss_reason(error)}") from None
            bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
            if len(bad):
                raise BundleError(f"{name}: item vector of row {start + int(bad[0])} is not finite")

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
