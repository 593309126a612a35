"""Train the two-stage baseline's text encoder: the speech encoder's stage with caption text in place of sound.

Same teacher (the one the run's speech encoder was taught by, read through its saved whitening), same targets,
heads, objective, steps, batch and optimiser (the `encoder` section), so the text embedding lands where the
speech embedding of the same caption does and the run's generator reads it unchanged. The speech encoder must
be trained first: its teacher and target space are what this one joins.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from s2i_runtime.errors import InputError

from ..checkpoint import (
    ENCODER,
    GENERATOR,
    TEACHER_WHITENING,
    TEXT_ENCODER,
    encoder_teacher_name,
    has_module,
    load_module,
    read_meta,
    save_module,
)
from ..data import caption_grammar
from ..models import FeatureWhitening, SpeechEncoderConfig
from ..models.text_encoder import TextEncoderConfig, build_text_encoder
from .common import SPOKEN_ATTRIBUTES, attribute_loss
from .encoder import EncoderStage, choose_teacher


def text_encoder_config(config, speech_config) -> TextEncoderConfig:
    """The text encoder's layers from the config's `text_encoder` section; its word list is the caption grammar's,
    its output size and normalisation the speech encoder's."""
    section = config.text_encoder
    return TextEncoderConfig(words=caption_grammar.vocabulary(), embedding_dim=speech_config.embedding_dim,
                             word_dim=section.word_dim, hidden=section.hidden, attention_dim=section.attention_dim,
                             normalize="l2" if speech_config.normalize == "l2" else "none")


class TextEncoderStage(EncoderStage):
    name = TEXT_ENCODER

    def __init__(self, config, run_dir):
        if not has_module(run_dir, ENCODER):
            raise InputError(f"{run_dir}: no speech encoder: run `s2i-train encoder --run {run_dir}` first "
                             "(the text encoder joins its embedding space)")
        self.speech_meta = read_meta(run_dir, ENCODER)
        self.readouts = None
        if config.text_encoder.readout_weight > 0:
            if not has_module(run_dir, GENERATOR):
                raise InputError(f"{run_dir}: text_encoder.readout_weight needs the run's generator: run "
                                 f"`s2i-train generator --run {run_dir}` first")
            self.readouts = load_module(run_dir, GENERATOR).ca.eval()
            if len(self.readouts.readouts) < len(SPOKEN_ATTRIBUTES):
                raise InputError("text_encoder.readout_weight needs a generator with an attribute code")
        super().__init__(config, run_dir)

    def _teacher(self, images, size: int) -> tuple[str, torch.Tensor, dict[str, float]]:
        name, features, _ = choose_teacher(self.run_dir, [encoder_teacher_name(self.run_dir)], images, size)
        return name, features, {}

    def _whitening(self, images) -> FeatureWhitening | None:
        if self.speech_meta.get("summary", {}).get("teacher_whiten", "none") == "none":
            return None
        return load_module(self.run_dir, TEACHER_WHITENING)

    def _load_inputs(self) -> None:
        self.waves = None
        self.texts = [caption_grammar.tokens(r["text"]) for r in self.captions.records]

    def _build_model(self) -> tuple[Any, nn.Module]:
        speech = SpeechEncoderConfig.from_dict(self.speech_meta["config"]).resolved()
        model_config = text_encoder_config(self.config, speech)
        return model_config, build_text_encoder(model_config)

    def _inputs(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.ids([self.texts[i] for i in idx.tolist()])

    def _extra_loss(self, student: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]] | None:
        if self.readouts is None:
            return None
        centred = self.readouts.centred(student)
        logits = {name: readout(centred) for name, readout in zip(SPOKEN_ATTRIBUTES, self.readouts.readouts,
                                                                   strict=False)}
        loss, accs = attribute_loss(logits, self.captions.named_attributes(idx), SPOKEN_ATTRIBUTES)
        figures = {"readout": loss.item(), **{f"readout_{name}": value for name, value in accs.items()}}
        return self.config.text_encoder.readout_weight * loss, figures

    def save_outputs(self, step: int) -> None:
        summary = {**self.summary(step), "speech_encoder_sha256": self.speech_meta.get("sha256")}
        if self.readouts is not None:
            summary["readout_weight"] = self.config.text_encoder.readout_weight
        save_module(self.run_dir, TEXT_ENCODER, self.saved_model(), self.model_config, summary)


@torch.no_grad()
def text_embeddings(encoder: nn.Module, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """The text encoder's embedding of each text (a caption or a transcript), (N, D)."""
    encoder.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        words = [caption_grammar.tokens(t) for t in texts[start : start + batch_size]]
        out.append(encoder(*encoder.ids(words)))
    return torch.cat(out) if out else torch.empty(0, encoder.config.embedding_dim)
