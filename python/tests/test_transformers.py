"""A packed Hugging Face directory loads into `transformers` (where torch and
transformers are importable; CI has neither) and gives the original model's
outputs bit for bit."""

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is not installed (CPU builds are not on PyPI's default index)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")

import padic_burst  # noqa: E402
import padic_burst.torch  # noqa: E402
from conftest import real_model_dir  # noqa: E402


def test_a_packed_model_directory_runs_as_the_original(tmp_path):
    original = real_model_dir()
    packed = tmp_path / "packed"
    padic_burst.compress_file(original, packed)
    config = transformers.AutoConfig.from_pretrained(packed)
    model = transformers.AutoModel.from_config(config)
    missing, unexpected = model.load_state_dict(padic_burst.torch.load_file(packed), strict=False)
    assert missing == [] and set(unexpected) <= {"embeddings.position_ids"}
    reference = transformers.AutoModel.from_pretrained(original)
    tokens = transformers.AutoTokenizer.from_pretrained(packed)(["bit-exact weights"], return_tensors="pt")
    with torch.no_grad():
        got = model.eval()(**tokens).last_hidden_state
        want = reference.eval()(**tokens).last_hidden_state
    assert torch.equal(got, want)
