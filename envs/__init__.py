"""Gymnasium registration: `import envs; gym.make("TapQuant-LeNet5-v1")`.

Also works without the import as `gym.make("envs:TapQuant-LeNet5-v1")`.
`-v1` is the current environment (the clip is a decision); `-v0` is the
guide's (tmax = p90 + 10, 29 features): see TapQuantEnv's Version History.
"""

from gymnasium.envs.registration import register, registry

from models import quant_layer_names

_NAMES = {"lenet5": "LeNet5", "alexnet": "AlexNet", "vgg16": "VGG16", "vgg19": "VGG19"}
ENV_IDS = {model: f"TapQuant-{name}-v1" for model, name in _NAMES.items()}
GUIDE_ENV_IDS = {model: f"TapQuant-{name}-v0" for model, name in _NAMES.items()}

for _model in _NAMES:
    for _env_id, _entry, _kwargs in ((ENV_IDS[_model], "TapQuantEnv", {}),
                                     (GUIDE_ENV_IDS[_model], "TapQuantEnvV0", {"tmax_rule": "guide"})):
        if _env_id not in registry:
            register(
                id=_env_id,
                entry_point=f"envs.tap_env:{_entry}",
                kwargs={"model": _model, **_kwargs},
                # one step per approximated layer: at most all quantized layers
                max_episode_steps=len(quant_layer_names(_model)),
            )
