"""The study's vocabulary, free of imports so the CLI can list choices without torch/numpy."""

DATASETS = ("mnist1d", "digits")
AXES = ("width", "data")
OPTIMIZERS = ("sgd", "adamw")
PARAMETRIZATIONS = ("sp", "mup")
RULES = ("none", "fan_in", "fan_in_inv", "param_count")   # width arm
MODES = ("decoupled", "independent")
DATA_RULES = ("none", "steps_per_epoch", "steps_per_epoch_T")  # data arm

RULE_LABELS = {
    "none": "none", "fan_in": "FanIn(power=1)", "fan_in_inv": "FanIn(power=-1)",
    "param_count": "ParamCount()", "steps_per_epoch": "StepsPerEpoch(M)",
    "steps_per_epoch_T": "StepsPerEpoch(M, epochs=T)",
}

# What the study imports beyond torch: the `study` extra of pyproject.toml.
STUDY_PACKAGES = {"mnist1d": "mnist1d", "sklearn": "scikit-learn",
                  "matplotlib": "matplotlib", "tqdm": "tqdm", "numpy": "numpy"}
