"""The transcripts behind the encoder's word-recognition term, and the term on the encoder's own steps."""

from __future__ import annotations

import pytest
import torch

from s2i_runtime.errors import InputError
from s2i_train.models.speech_encoder import SpeechEncoderConfig, build_speech_encoder
from s2i_train.train.encoder import EncoderWithHead
from s2i_train.train.transcripts import BLANK, transcripts


def test_transcripts_index_words_over_the_captions_own_vocabulary():
    records = [{"key": "a", "text": "A small red star."}, {"key": "b", "text": "a red circle on a dark background"}]
    said = transcripts(records, "DATA")
    assert said.vocabulary == ("a", "background", "circle", "dark", "on", "red", "small", "star")
    assert said.num_classes == 9 and BLANK == 0
    assert said.words.tolist() == [[1, 7, 6, 8, 0, 0, 0], [1, 6, 3, 5, 1, 4, 2]]
    assert said.lengths.tolist() == [4, 7]
    words, lengths = said.batch(torch.tensor([0]))
    assert words.tolist() == [[1, 7, 6, 8]] and lengths.tolist() == [4]


@pytest.mark.parametrize("record", [{"key": "k7"}, {"key": "k7", "text": "  ..."}])
def test_a_caption_without_text_is_one_clear_error(record):
    with pytest.raises(InputError) as caught:
        transcripts([{"key": "k1", "text": "a red star"}, record], "DATA")
    assert str(caught.value) == ("DATA: caption k7 has no transcript; encoder.word_weight needs the text of every "
                                 "training caption (set it to 0)")


def test_the_word_read_out_leaves_the_embedding_as_the_saved_encoder_computes_it():
    torch.manual_seed(0)
    encoder = build_speech_encoder(SpeechEncoderConfig(arch="s2igan", embedding_dim=16, hidden=8, conv_channels=(8, 8),
                                                       attention_dim=8)).eval()
    with_words = EncoderWithHead(encoder, None, None, torch.nn.Linear(16, 5)).eval()
    mel, lengths = torch.randn(3, 40, 50), torch.tensor([50, 31, 12])
    out = with_words(mel, lengths)
    assert torch.equal(out.embedding, encoder(mel, lengths))
    logits, valid = out.words
    assert logits.shape == (3, valid.shape[1], 5)
    assert valid.sum(dim=(1, 2)).tolist() == encoder.output_lengths(lengths).tolist()
    assert EncoderWithHead(encoder, None).eval()(mel, lengths).words is None
