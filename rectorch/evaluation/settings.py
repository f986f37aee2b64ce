"""How a ranking evaluation is run: cut-offs, seen-item masking, full or sampled ranking."""

from dataclasses import dataclass

from rectorch.data.context import TrainContext
from rectorch.evaluation.protocol import Protocol, ranking_label


@dataclass
class EvaluationSettings:
    """Settings of one ranking evaluation, instantiated by Hydra (``_target_``) or by hand.

    Args:
        ks: cut-offs K of every top-K metric (default ``(1, 5, 10, 20)``). A single int, lists and
            Hydra's ``ListConfig`` are accepted and stored as a sorted tuple without duplicates.
        mask_seen: remove each user's already-seen items from the ranking (default ``True``);
            a target is never removed, even when it was also seen.
        sampled_negatives: ``None`` (default) ranks the whole catalog; ``N`` ranks each user's
            targets against only ``N`` uniformly sampled items that are neither seen nor targets
            (so seen items never compete, whatever ``mask_seen``). Sampled results are labelled
            as such (see :class:`rectorch.evaluation.Protocol`).
        seed: seed of the negative sampler; unused in full ranking (default 0).
        batch_users: users scored per chunk by the caller, bounding memory at
            ``batch_users * (num_items + 1)`` scores (default 256).
    """

    ks: tuple[int, ...] = (1, 5, 10, 20)
    mask_seen: bool = True
    sampled_negatives: int | None = None
    seed: int = 0
    batch_users: int = 256

    def __post_init__(self) -> None:
        ks = (self.ks,) if isinstance(self.ks, int) else self.ks
        self.ks = tuple(sorted({int(k) for k in ks}))

    @property
    def max_k(self) -> int:
        """The largest cut-off: the single top-K computed per update."""
        return self.ks[-1]

    def validate(self, num_items: int) -> None:
        """Check the settings against a catalog of ``num_items`` items.

        Args:
            num_items: catalog size (item ids 1..num_items).

        Raises:
            ValueError: on an empty ``ks``, a cut-off ``k <= 0`` or larger than the catalog,
                ``sampled_negatives`` outside ``1..num_items - 1``, or ``batch_users <= 0``.
        """
        if not self.ks:
            raise ValueError("ks is empty: give at least one cut-off k, e.g. ks=[10]")
        for k in self.ks:
            if k <= 0:
                raise ValueError(f"k={k} must be positive (ks={list(self.ks)})")
            if k > num_items:
                raise ValueError(f"k={k} exceeds the catalog of {num_items} items")
        if self.sampled_negatives is not None and not 0 < self.sampled_negatives < num_items:
            raise ValueError(
                f"sampled_negatives={self.sampled_negatives} must be between 1 and {num_items - 1} "
                f"(smaller than the catalog of {num_items} items); use null for full ranking"
            )
        if self.batch_users <= 0:
            raise ValueError(f"batch_users={self.batch_users} must be positive")

    def protocol(self, context: TrainContext, stage: str) -> Protocol:
        """What metrics of ``stage`` (``val``/``test``) are measured on; sampled ranking never ranks seen items."""
        return Protocol(
            dataset=context.spec.name,
            split=context.split,
            ranking=ranking_label(self.sampled_negatives),
            mask_seen=self.mask_seen or self.sampled_negatives is not None,
            ks=self.ks,
            users=context.eval_users[stage],
        )
