"""`hspi demo --quick` end to end: build, train, evaluate, two black boxes over HTTP (hspi serve,
hspi query; KServe v2 with any model, OpenAI-compatible completions with the LM), match, verify;
then the LLM audit of SmolLM2 behind hspi serve's chat API."""

import pytest

from conftest import hspi


@pytest.mark.slow
def test_quick_demo_names_the_hidden_platform(tmp_path):
    out = tmp_path / "demo"
    r = hspi("demo", "--quick", "-n", "40", "--seed", "3", "-o", out, "-q", timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("matcher named it") == 2
    assert r.stdout.count("true claim -> CONSISTENT, false claim -> INCONSISTENT") == 2
    assert "black box over openai" in r.stdout
    assert (out / "suspect.jsonl").is_file() and (out / "classifier" / "classifier.json").is_file()
    assert (out / "suspect-openai.jsonl").is_file()
    assert list((out / "plots").glob("*.png"))
    # the LLM audit: llama.cpp Q4_K_M served, transformers bf16 claimed
    assert "audit named it; verdicts INCONSISTENT and CONSISTENT" in r.stdout
    assert (out / "llm-audit-false-claim.html").is_file() and "open the LLM audit report: file://" in r.stdout
