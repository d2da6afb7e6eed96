from pathlib import Path

import pytest

from tdsm_core.config import ExperimentConfig, load_config, parse_overrides
from tdsm_core.errors import ConfigError
from tdsm_core.data.splits import BENCHMARK_SPLITS

from conftest import ROOT

CONFIGS = ROOT / "configs"


@pytest.mark.parametrize("split", BENCHMARK_SPLITS)
def test_every_split_config_loads_with_the_paper_hyperparameters(split):
    cfg = load_config(CONFIGS / f"{split}.yaml")
    assert cfg.name == split and cfg.data.split == split
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.lr, cfg.train.weight_decay, cfg.train.warmup_steps) == \
        (50000, 256, 1e-4, 0.01, 100)
    assert (cfg.eval.timestep, cfg.eval.num_noise) == (25, 3)
    assert cfg.model.hidden_dim == 768 and cfg.model.text_dim == 2048 and cfg.text.subfolder == "text_encoder"
    assert Path(cfg.data.features).is_absolute() and str(cfg.data.features).startswith(str(ROOT))
    # the release reads the NTU-120 prompt files for both datasets and takes the first num_classes rows
    assert cfg.data.class_csv.endswith("ntu120.csv") and cfg.data.class_llm.endswith("ntu120_llm.txt")
    assert cfg.data.num_classes == (60 if split.startswith("ntu60") else 0)  # 0: every row of the files


def test_demo_config_is_small():
    cfg = load_config(CONFIGS / "demo.yaml")
    assert cfg.text.encoder == "minilm" and cfg.model.text_dim == 768 and cfg.model.hidden_dim <= 256


def test_unknown_key_lists_the_valid_ones(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  stpes: 10\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['stpes'\] in section 'train'; valid keys are: steps"):
        load_config(path)


@pytest.mark.parametrize("text,pattern", [
    ("train:\n  steps: ten\n", r"train.steps must be of type int"),
    ("train:\n  lr: true\n", r"train.lr must be of type float"),
    ("diffusion:\n  prediction_type: eps\n", r"must be one of \['epsilon', 'sample', 'v_prediction'\]"),
    ("train:\n  precision: bf16\n", r"train.precision must be one of \['auto', 'fp32'\]"),
    ("train:\n  device: gpu\n", r"must be auto, cpu, cuda, cuda:N or mps; got \('gpu', 'auto'\)"),
    ("diffusion:\n  beta_start: 0.5\n  beta_end: 0.1\n", r"0 < beta_start <= beta_end < 1; got \(0.5, 0.1\)"),
    ("train:\n  validation_samples: 0\n", r"train.validation_samples must be at least 1; got 0"),
    ("model:\n  hidden_dim: 100\n  num_heads: 12\n", r"divisible"),
    ("model: 5\n", r"section model must be a mapping"),
    ("- a\n- b\n", r"must hold a mapping"),
    ("train: [\n", r"not valid YAML"),
    ("base: missing.yaml\n", r"does not exist"),
    ("train:\n  steps: 0\n", r"train.steps must be at least 1; got 0"),
    ("eval:\n  timestep: 50\n", r"eval.timestep must lie in \[0, diffusion.num_timesteps = 50\)"),
    ("text:\n  max_length: 20\n", r"text.max_length \(20\) must equal model.text_len"),
    ("loss:\n  margin: -1.0\n", r"must not be negative"),
    ("skeleton:\n  channels: [64]\n", r"skeleton.channels and skeleton.strides"),
    ("skeleton:\n  channels: [64, x]\n", r"skeleton.channels\[1\] must be of type int"),
])
def test_bad_configs_are_rejected_clearly(tmp_path, text, pattern):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=pattern):
        load_config(path)


def test_base_chain_and_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text("seed: 1\ntrain:\n  steps: 5\n  lr: 0.5\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrain:\n  steps: 7\n")
    cfg = load_config(tmp_path / "b.yaml", ["train.lr=0.25", "name=x"])
    assert (cfg.seed, cfg.train.steps, cfg.train.lr, cfg.name) == (1, 7, 0.25, "x")
    assert parse_overrides(["a.b.c=3", "d=hello"]) == {"a": {"b": {"c": 3}}, "d": "hello"}
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides(["train.steps"])


def test_self_referencing_base_is_caught(tmp_path):
    (tmp_path / "a.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="names itself"):
        load_config(tmp_path / "a.yaml")


def test_a_retired_key_is_named_in_a_config_but_tolerated_in_a_saved_one(tmp_path):
    from tdsm_core.config import config_from_dict, without_retired_keys

    values = ExperimentConfig().to_dict()
    values["eval"]["batch_size"] = 512  # what checkpoints of earlier versions hold
    with pytest.raises(ConfigError, match=r"eval\.batch_size is no longer used.*max_rows_per_call"):
        config_from_dict(values)
    assert config_from_dict(without_retired_keys(values)).eval.num_noise == 3
    assert values["eval"]["batch_size"] == 512  # the caller's dict is left alone


def test_resume_comparisons_split_between_the_denoiser_and_the_encoder():
    from tdsm_core.config import encoder_differences, training_differences

    cfg = ExperimentConfig()
    saved = cfg.to_dict()
    saved["skeleton"].update(source="/data/msr_raw", kind="msr", lr=0.05)
    saved["train"].update(lr=5e-4, log_every=7)
    assert training_differences(saved, cfg) == ["train.lr: 0.0005 -> 0.0001"]  # skeleton.* is the encoder's
    assert encoder_differences(saved, cfg) == ["skeleton.lr: 0.05 -> 0.1"]  # where the data is read from is free


def test_exponent_floats_without_a_dot_are_floats(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1e-4\n")  # YAML 1.1 reads this as a string
    assert load_config(path).train.lr == 1e-4
    assert load_config(path, ["train.lr=3E-5"]).train.lr == 3e-5
    with pytest.raises(ConfigError, match="must be of type float"):
        load_config(path, ["train.lr=fast"])


def test_the_package_docstring_and_the_readme_layout_name_every_module_once_and_agree():
    import re

    import tdsm_core

    doc = tdsm_core.__doc__
    block = doc[doc.index("the method:"):].rstrip()
    named, folder = [], ""
    for line in block.splitlines():  # "data/  features.py, ..." opens a subpackage; continuation lines stay in it
        opened = re.match(r"^(\w+)/\s", line)
        if opened:
            folder = opened.group(1) + "/"
        elif re.match(r"^the method:", line):
            folder = ""
        named += [(folder if name != "__main__" else "") + name for name in re.findall(r"\b(\w+)\.py\b", line)]
    package = ROOT / "tdsm_core"
    modules = sorted(p.relative_to(package).with_suffix("").as_posix() for p in package.rglob("*.py")
                     if p.name != "__init__.py")
    assert sorted(named) == modules, set(named) ^ set(modules)  # every module, once, in its own subpackage
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("## References")]
    assert all("  " + line in layout for line in block.splitlines()), "README layout differs from tdsm_core/__init__"


LAYERS = ["", "data", "figures", "runs", "skeletons", "workbook", "cli"]  # the order of the package docstring


def test_imports_point_downward_only():
    """The top (the method) imports nothing from a subpackage, and a subpackage imports only the top, itself and the
    subpackages before it; imports under `if TYPE_CHECKING:` (annotations only) and __main__.py are exempt."""
    import ast

    package = ROOT / "tdsm_core"
    wrong = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        own = parts[0] if len(parts) > 1 else ""
        if parts == ("__main__",):
            continue
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
                continue
            if node.level:
                base = list(parts[:-1])[:len(parts) - node.level] if node.level > 1 else list(parts[:-1])
                target = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("tdsm_core"):
                target = node.module.split(".")[1:]
            else:
                continue
            folder = target[0] if target and (package / target[0]).is_dir() else ""
            if LAYERS.index(folder) > LAYERS.index(own):
                wrong.append(f"{path.relative_to(package)}:{node.lineno} imports {'.'.join(target)}")
    assert not wrong, wrong
