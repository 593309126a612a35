"""Models of s2i: speech encoders, the StackGAN-v2 generator and discriminators, image teachers/judge."""

from .configutil import config_from_dict, config_to_dict
from .discriminator import (
    Discriminator,
    DiscriminatorConfig,
    DiscriminatorOutput,
    build_discriminator,
    build_discriminators,
)
from .ema import EMA
from .generator import (
    ConditioningAugmentation,
    ExportableGenerator,
    Generator,
    GeneratorConfig,
    GeneratorOutput,
    build_generator,
    draw_one_hot,
)
from .image_encoders import (
    ImageNetTeacher,
    Judge,
    JudgeConfig,
    ShapesTeacher,
    ShapesTeacherConfig,
    TeacherOutput,
    build_imagenet_teacher,
    colour_scrambled,
    resize_to,
)
from .relation import RELATIONS, RelationSupervisor
from .speech_encoder import SpeechEncoder, SpeechEncoderConfig, build_speech_encoder
from .util import count_parameters, freeze
from .whitening import FeatureWhitening, FeatureWhiteningConfig, WhitenedImageNetwork

__all__ = [
    "EMA",
    "RELATIONS",
    "RelationSupervisor",
    "ConditioningAugmentation",
    "Discriminator",
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "ExportableGenerator",
    "FeatureWhitening",
    "FeatureWhiteningConfig",
    "Generator",
    "GeneratorConfig",
    "GeneratorOutput",
    "ImageNetTeacher",
    "Judge",
    "JudgeConfig",
    "ShapesTeacher",
    "ShapesTeacherConfig",
    "SpeechEncoder",
    "SpeechEncoderConfig",
    "TeacherOutput",
    "WhitenedImageNetwork",
    "build_discriminator",
    "build_discriminators",
    "build_generator",
    "draw_one_hot",
    "build_imagenet_teacher",
    "build_speech_encoder",
    "colour_scrambled",
    "config_from_dict",
    "config_to_dict",
    "count_parameters",
    "freeze",
    "resize_to",
]
