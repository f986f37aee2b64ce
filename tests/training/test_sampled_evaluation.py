"""``evaluation.sampled_negatives=N`` trains end to end: checkpointing and early stopping follow its labelled key."""

from rectorch.training.train import train


def test_sampled_evaluation_trains_and_logs_labelled_metrics(compose_train) -> None:
    cfg = compose_train("evaluation.sampled_negatives=20", "trainer.max_epochs=2", "logger=none")
    assert cfg.callbacks.model_checkpoint.monitor == "val/sampled-20/ndcg@10"
    assert cfg.callbacks.early_stopping.monitor == "val/sampled-20/ndcg@10"
    results = train(cfg)
    assert results["protocol"]["ranking"] == "sampled-20"
    assert results["best_epoch"] in (1, 2) and results["checkpoint"].endswith("best.ckpt")
    assert not any(key.startswith("ndcg") for key in results["val"]), "a sampled number without its label"
    # 20 sampled negatives + 1 target: a trained model must rank well above chance (1/21 for HR@1)
    assert results["test"]["sampled-20/hr@1"] > 3 / 21
