"""Gymnasium registration: `import envs; gym.make("TapQuant-LeNet5-v0")`.

Also works without the import as `gym.make("envs:TapQuant-LeNet5-v0")`.
"""

from gymnasium.envs.registration import register, registry

from models import quant_layer_names

ENV_IDS = {
    "lenet5": "TapQuant-LeNet5-v0",
    "alexnet": "TapQuant-AlexNet-v0",
    "vgg16": "TapQuant-VGG16-v0",
    "vgg19": "TapQuant-VGG19-v0",
}

for _model, _env_id in ENV_IDS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point="envs.tap_env:TapQuantEnv",
            kwargs={"model": _model},
            # one step per approximated layer: at most all quantized layers
            max_episode_steps=len(quant_layer_names(_model)),
        )
