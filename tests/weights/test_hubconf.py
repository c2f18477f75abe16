"""hubconf.py: torch.hub.load(repo_dir, "fastvit_t8", source="local", pretrained=...)."""

from pathlib import Path

import torch

import fastvit
from tests.helpers.weights import weights_model

REPO = Path(__file__).resolve().parents[2]


def test_hubconf_exposes_every_variant():
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hubconf)
    entries = sorted(n for n in dir(hubconf) if callable(getattr(hubconf, n))
                     and not n.startswith("_"))  # what torch.hub.list reports
    assert entries == sorted(fastvit.list_models("all"))
    assert "pretrained=True" in hubconf.fastvit_t8.__doc__


def test_hub_load_with_and_without_weights(tmp_path):
    reference = weights_model("fastvit_t8")
    path = fastvit.save_checkpoint(reference, tmp_path / "t8.safetensors")
    model = torch.hub.load(str(REPO), "fastvit_t8", source="local", pretrained=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), reference(x))
    random = torch.hub.load(str(REPO), "fastvit_sa12", source="local", num_classes=5)
    assert random.num_classes == 5 and random.variant == "fastvit_sa12"
