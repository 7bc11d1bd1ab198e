import numpy as np
import pytest

from hspi_onnx.errors import BadProbesError
from hspi_onnx.inputs.probes import KINDS, generate, load_probes


@pytest.mark.parametrize("name", ["resnet", "digits", "lm"])
def test_every_kind_generates_seeded_hashed_probes(zoo, name, tmp_path):
    spec = zoo[name].spec
    for kind in KINDS[spec.kind]:
        a, b = generate(spec, kind, n=6, seed=1), generate(spec, kind, n=6, seed=1)
        assert a.sha256 == b.sha256 and a.inputs.shape == (6, *spec.shape)
        assert generate(spec, kind, n=6, seed=2).sha256 != a.sha256
        a.check_fits(spec)
        back = load_probes(a.save(tmp_path / f"{kind}.npz"))
        assert back.sha256 == a.sha256 and np.array_equal(back.inputs, a.inputs)
        if spec.kind != "tokens":
            assert spec.low <= a.inputs.min() and a.inputs.max() <= spec.high


def test_real_images_are_not_noise(zoo):
    spec = zoo["resnet"].spec
    img, noise = generate(spec, "images", n=8).inputs, generate(spec, "noise", n=8).inputs
    neighbour = lambda x: np.abs(np.diff(x, axis=-1)).mean()  # noqa: E731
    assert neighbour(img) < 0.5 * neighbour(noise)  # photos are smooth, noise is not


def test_calibration_split_is_disjoint_from_probes(zoo):
    spec = zoo["digits"].spec
    probes = generate(spec, "images", n=200).inputs.reshape(200, -1)
    calib = generate(spec, "images", n=200, split="calib").inputs.reshape(200, -1)
    shared = {r.tobytes() for r in probes} & {r.tobytes() for r in calib}
    assert not shared


def test_kind_must_fit_the_input(zoo):
    with pytest.raises(BadProbesError, match="use one of tokens, text"):
        generate(zoo["lm"].spec, "images", n=2)
    with pytest.raises(BadProbesError, match="shape"):
        generate(zoo["resnet"].spec, n=2).check_fits(zoo["digits"].spec)


def test_tampered_or_pickled_probe_files_are_refused(zoo, tmp_path):
    path = generate(zoo["digits"].spec, n=4).save(tmp_path / "p.npz")
    with np.load(path) as npz:
        parts = {k: npz[k] for k in npz.files}
    parts["inputs"] = parts["inputs"] + 1e-3
    np.savez(tmp_path / "t.npz", **parts)
    with pytest.raises(BadProbesError, match="content hash"):
        load_probes(tmp_path / "t.npz")
    np.savez(tmp_path / "o.npz", inputs=np.array([object()], dtype=object), ids=parts["ids"], meta=parts["meta"])
    with pytest.raises(BadProbesError):
        load_probes(tmp_path / "o.npz")
    (tmp_path / "g.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(BadProbesError):
        load_probes(tmp_path / "g.npz")
