"""User-interest encoder: a causal sequence model over the item vectors of a user's history,
with position, scenario and event-type embeddings, giving an interest vector at every position.

Sequences are right-padded (real events first), so every real position only ever attends to real
events before it, and the user's current interest is at position ``length - 1``.

Scale: item vectors arrive unit-norm (about 1/sqrt(dim) per coordinate) and the position,
scenario and event embeddings are added to them before a LayerNorm. An embedding table at
``nn.Embedding``'s default N(0, 1) init has rows of norm sqrt(dim) (8 at dim 64): three of them
summed leave the item about 1/14 of each token, and the scenario and event rows, constant within
a scenario, push every user the same way. Models built like that never got past the popularity
baseline on MovieLens (validation NDCG@10 0.018 against 0.134 after the same ~280 steps). So the
added tables start at std 0.02 (rows of norm 0.16 at dim 64) and learn their share; the test
``tests/test_learnability.py`` fails when they start at N(0, 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from interest_model.config import Frozen


EMBED_STD = 0.02  # init of every table added to the item vectors (see the module docstring)


class UserEncoderConfig(Frozen):
    kind: Literal["transformer", "lstm", "hf"] = "transformer"
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_len: int = 50
    hf_model: str | None = None  # kind=hf: a decoder (id or path) driven through inputs_embeds


class UserEncoder(nn.Module):
    def __init__(self, cfg: UserEncoderConfig, n_scenarios: int, n_event_types: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.position = nn.Embedding(cfg.max_len, d)
        self.scenario = nn.Embedding(max(1, n_scenarios), d)
        self.event = nn.Embedding(max(1, n_event_types), d)
        for table in (self.position, self.scenario, self.event):
            nn.init.normal_(table.weight, std=EMBED_STD)
        self.norm_in = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.kind == "transformer":
            layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=4 * d, dropout=cfg.dropout,
                                               batch_first=True, norm_first=True, activation="gelu")
            self.body = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        elif cfg.kind == "lstm":
            self.body = nn.LSTM(d, d, num_layers=cfg.layers, batch_first=True,
                                dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        elif cfg.kind == "hf":
            if not cfg.hf_model:
                raise ValueError("user_encoder.kind=hf needs user_encoder.hf_model")
            from transformers import AutoModel

            from interest_model.models.item_encoder import _offline, resolve_model_path

            self.body = AutoModel.from_pretrained(resolve_model_path(cfg.hf_model), local_files_only=_offline())
            hidden = self.body.config.hidden_size
            self.hf_in = nn.Linear(d, hidden)
            self.hf_out = nn.Linear(hidden, d)
            # Feed the decoder inputs at the scale of its own token embeddings (what its first
            # layer was trained on): the normalized token has about unit coordinates.
            table = self.body.get_input_embeddings()
            scale = float(table.weight.detach().float().std()) if table is not None else EMBED_STD
            nn.init.normal_(self.hf_in.weight, std=scale / math.sqrt(d))
            nn.init.zeros_(self.hf_in.bias)
        else:
            raise ValueError(f"unknown user encoder {cfg.kind!r}")
        self.norm_out = nn.LayerNorm(d)

    def forward(self, item_vecs: torch.Tensor, mask: torch.Tensor, scenario: torch.Tensor,
                event: torch.Tensor) -> torch.Tensor:
        """item_vecs [B, L, D]; mask [B, L] (1 = event, right-padded); scenario, event [B, L] ids.
        Returns [B, L, D] interest vectors (rows at padded positions are meaningless)."""
        x = self._tokens(item_vecs, scenario, event)
        kind = self.cfg.kind
        if kind == "transformer":
            h = self.body(x, mask=_causal(x.shape[1], x.device), src_key_padding_mask=~mask.bool())
        elif kind == "lstm":
            h, _ = self.body(x)
        else:
            out = self.body(inputs_embeds=self.hf_in(x), attention_mask=mask.long())
            h = self.hf_out(out.last_hidden_state)
        return self.norm_out(h)

    def inputs(self, item_vecs: torch.Tensor, items: torch.Tensor, events: torch.Tensor,
               scenario: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``forward``'s arguments from a batch's item ids [B, L] (0 = pad), their vectors, the
        events and the scenarios ([B]: each row's, or [B, L]: each event's)."""
        scen = scenario.unsqueeze(1).expand_as(items) if scenario.dim() == 1 else scenario
        return item_vecs.to(self.position.weight.dtype), items != 0, scen, events

    def _tokens(self, item_vecs: torch.Tensor, scenario: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
        B, L, _ = item_vecs.shape
        pos = torch.arange(L, device=item_vecs.device).unsqueeze(0).expand(B, L)
        x = item_vecs + self.position(pos) + self.scenario(scenario) + self.event(event)
        return self.dropout(self.norm_in(x))

    def last(self, item_vecs: torch.Tensor, mask: torch.Tensor, scenario: torch.Tensor,
             event: torch.Tensor) -> torch.Tensor:
        """``forward``'s rows [B, D] at each history's last event (position 0 of an empty one).
        In inference, a transformer's last layer computes only those rows: every position's
        keys and values, one query per history: about a quarter less time at two layers, on
        the serving path's largest cost (docs/serving_speed.md)."""
        last = mask.sum(1).clamp(min=1) - 1
        rows = torch.arange(item_vecs.shape[0], device=item_vecs.device)
        if self.cfg.kind != "transformer" or self.training:
            return self.forward(item_vecs, mask, scenario, event)[rows, last]
        x = self._tokens(item_vecs, scenario, event)
        L = x.shape[1]
        *head, final = self.body.layers
        pad = ~mask.bool()
        causal = _causal(L, x.device)
        for layer in head:
            x = layer(x, src_mask=causal, src_key_padding_mask=pad)
        # The last event sees every event up to it (causal) and nothing after (padding); an
        # empty history's position 0 sees itself, as in forward.
        keys_hidden = pad & (torch.arange(L, device=x.device) != last.unsqueeze(1))
        q = x[rows, last].unsqueeze(1)  # [B, 1, D]
        kv = final.norm1(x)  # norm_first layers (built so in __init__)
        attended = final.self_attn(kv[rows, last].unsqueeze(1), kv, kv, key_padding_mask=keys_hidden,
                                   need_weights=False)[0]
        q = q + attended
        q = q + final._ff_block(final.norm2(q))
        return self.norm_out(q[:, 0])


def _causal(length: int, device) -> torch.Tensor:
    """True above the diagonal: a position never attends to later ones."""
    return torch.triu(torch.ones(length, length, dtype=torch.bool, device=device), diagonal=1)
