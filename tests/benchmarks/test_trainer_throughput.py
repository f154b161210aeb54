"""The trainer throughput benchmark runs end to end on a small model and reports both sides."""

from __future__ import annotations

from hiergym.benchmarks import trainer_throughput


def test_trainer_throughput_reports_trainer_and_plain_rates(capsys) -> None:
    rates = trainer_throughput.main(["--tasks", "2", "--group", "2", "--max-steps", "2", "--max-new-tokens", "4",
                                     "--iterations", "2", "--device", "cpu"])
    assert set(rates) == {"trainer_generate", "trainer_update", "plain_generate", "plain_update"}
    assert all(rate > 0 for rate in rates.values())
    out = capsys.readouterr().out
    assert "rollout generation (tokens/s)" in out and "(plain: fwd/bwd)" in out


def test_architectures_are_valid_tiny_model_configs() -> None:
    from hiergym.training.config import ARCHITECTURE_FIELDS

    for architecture in trainer_throughput.ARCHITECTURES.values():
        assert set(architecture) <= ARCHITECTURE_FIELDS
