"""The trainer throughput benchmark runs end to end on a small model and reports both sides."""

from __future__ import annotations

from hiergym.benchmarks import trainer_throughput


def test_trainer_throughput_reports_trainer_and_plain_rates(capsys) -> None:
    rates = trainer_throughput.main(["--tasks", "2", "--group", "2", "--max-steps", "2", "--max-new-tokens", "4",
                                     "--iterations", "2", "--device", "cpu"])
    assert {"trainer_generate", "trainer_update", "plain_generate", "plain_update", "cached_generate_replay",
            "plain_generate_replay", "packed_update", "unpacked_update"} <= set(rates)
    assert all(rate > 0 for key, rate in rates.items() if key != "differing_samples")
    # The replay samples the same tokens through both paths; packing forwards fewer tokens per trained token.
    assert rates["differing_samples"] == 0
    assert 0 < rates["prompt_tokens_computed"] < rates["prompt_tokens_seen"]
    assert rates["packed_forward_per_token"] < rates["unpacked_forward_per_token"]
    out = capsys.readouterr().out
    assert "rollout generation (tokens/s)" in out and "(plain: fwd/bwd)" in out
    assert "prompt tokens computed / seen" in out and "update forward tokens per trained token" in out


def test_architectures_are_valid_tiny_model_configs() -> None:
    from hiergym.training.config import ARCHITECTURE_FIELDS

    for architecture in trainer_throughput.ARCHITECTURES.values():
        assert set(architecture) <= ARCHITECTURE_FIELDS
