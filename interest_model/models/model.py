"""The interest model: item vectors from text (plus optional id embeddings), a user-interest
encoder over them, and the next-item objective.

Item index 0 is padding; items are 1..N in catalog order. With a frozen text encoder the text
features are a cached buffer ``item_text`` [N+1, text_dim]; with a trainable one the model keeps the
catalog's tokens and runs the encoder on the items a step needs.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import model_validator

import torch
import torch.nn.functional as F
from torch import nn

from interest_model import losses
from interest_model.config import Frozen
from interest_model.events import EVENT_TYPES
from interest_model.models.adapter import MoEAdaptor
from interest_model.models.dynamics import DAY, NUM_FEATURES
from interest_model.models.item_encoder import ItemEncoder, ItemEncoderConfig
from interest_model.models.user_encoder import UserEncoder, UserEncoderConfig


# Text + ID items are normalize(normalize(text) + ID_RATE * id), the ids starting at zero. Adam moves
# every coordinate by about lr a step whatever its scale, so the multiplier is the ids' rate
# against the unit text vector: at 1 an id row moves an item about 6x slower (in angle) than an
# ID-only model's rows (norm 0.16 at start) move theirs, and text + ID ended level with SASRec-CE on
# ML-1M (validation NDCG@10 0.1689 vs 0.1682 after 6 epochs, its training loss the higher); at 4 it
# leads at every epoch (0.132 vs 0.112 after one, docs/evaluation.md, "In-domain"). Against the LayerNorm's
# output (norm sqrt(dim)) the ids would need thousands of steps to matter at all.
ID_RATE = 4.0
VECTOR_BLOCK = 65_536  # items whose vectors are computed at once from cached features


def logits(users: torch.Tensor, items: torch.Tensor, temperature: float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """What a model ranks items by, [B, N]: the cosine of unit user [B, D] and item [N, D]
    vectors over the temperature, plus the model's item bias ([B, N]; ``item_bias``) if it has
    one. Evaluation, the model API and the endpoint score with it (the training losses compute the
    same, arranged for their batches)."""
    scores = (users.to(items.dtype) / temperature) @ items.T  # the temperature on [B, D], not [B, N]
    return scores if bias is None else scores + bias

class ModelConfig(Frozen):
    HASH_WHEN_SET: ClassVar[tuple[str, ...]] = ("item_dynamics", "id_gradients")

    item_encoder: ItemEncoderConfig = ItemEncoderConfig()
    user_encoder: UserEncoderConfig = UserEncoderConfig()
    use_item_ids: bool = False  # text-only ("inductive") by default, so unseen items work
    use_text: bool = True  # False with use_item_ids: an ID-only model (the SASRec baseline)
    adaptor_experts: int | None = None  # MoE adaptor with whitening on the text features (transfer)
    temperature: float = 0.07
    loss: Literal["auto", "full", "sampled"] = "auto"
    num_negatives: int = 512
    full_softmax_max_items: int = 200_000
    # Gradients of the item-id table: "sparse" (the optimizer's work follows the rows a step reads,
    # optim.MixedAdam: lazy Adam moments, no weight decay), "dense" (AdamW over the whole table
    # every step), "auto": sparse under the sampled loss, dense under the full one.
    id_gradients: Literal["auto", "sparse", "dense"] = "auto"
    # Popularity dynamics (interest_model/models/dynamics.py): a score learned from each item's
    # recent share of its scenario's interactions at the time of the prediction, added to every
    # logit. Scale-free, so it carries to a target scenario with its own counts.
    item_dynamics: bool = False

    @model_validator(mode="after")
    def _check(self):
        if not (self.use_text or self.use_item_ids):
            raise ValueError("a model needs item text (use_text) or item ids (use_item_ids)")
        if not self.use_text and self.adaptor_experts:
            raise ValueError("the text adaptor needs use_text")
        return self


class InterestModel(nn.Module):
    def __init__(self, cfg: ModelConfig, num_items: int, num_scenarios: int, text_dim: int,
                 item_encoder: ItemEncoder | None = None):
        """num_items counts the padding row (catalog size + 1)."""
        super().__init__()
        self.cfg = cfg
        self.num_items = num_items
        d = cfg.user_encoder.dim
        self.item_encoder = item_encoder  # None when the text features are cached
        self.register_buffer("item_text", torch.zeros(num_items, text_dim), persistent=True)
        self.register_buffer("item_tokens", torch.zeros(num_items, 1, dtype=torch.long), persistent=True)
        self.register_buffer("item_token_mask", torch.zeros(num_items, 1, dtype=torch.long), persistent=True)
        # scenario_items[s, i]: item i belongs to scenario s's catalog
        self.register_buffer("scenario_items", torch.zeros(max(1, num_scenarios), num_items, dtype=torch.bool),
                             persistent=True)
        # A popularity prior (zero-shot + target counts): prior_weight * log(1 + training count of
        # the item in the row's scenario) is added to every score; weight 0 (the default) is off.
        self.register_buffer("item_prior", torch.zeros(max(1, num_scenarios), num_items), persistent=True)
        self.register_buffer("prior_weight", torch.zeros(()), persistent=True)
        if cfg.item_dynamics:
            # dyn_table [S, T, N+1, F]: features per scenario, day and item; dyn_origin [S]: each
            # scenario's first day. Set from the job's training events (set_dynamics).
            self.register_buffer("dyn_table", torch.zeros(max(1, num_scenarios), 1, num_items, NUM_FEATURES,
                                                          dtype=torch.float16), persistent=True)
            self.register_buffer("dyn_origin", torch.zeros(max(1, num_scenarios), dtype=torch.long), persistent=True)
            # The score is piecewise linear in each feature, with its kink at the uniform share:
            # w . [x, relu(x)]. Linear in a fixed basis, so a step costs one pass over the
            # [days, items, F] features the batch reads (a small MLP over them cost 3x a step on
            # ML-1M's catalog). Starts at no effect: training decides what recent popularity says.
            self.dynamics = nn.Linear(2 * NUM_FEATURES, 1, bias=False)
            nn.init.zeros_(self.dynamics.weight)
        else:
            self.dynamics = None
        self.adaptor = MoEAdaptor(text_dim, d, cfg.adaptor_experts) if cfg.adaptor_experts else None
        self.text_proj = nn.Sequential(nn.Linear(text_dim, d), nn.LayerNorm(d)) if cfg.use_text else None
        # Under the sampled loss a step reads a few thousand rows of the id table: sparse gradients
        # (unless the config says otherwise), so that the optimizer's work follows those rows, not
        # the catalog (optim.MixedAdam).
        sparse = cfg.id_gradients == "sparse" or (cfg.id_gradients == "auto" and self.loss_kind() == "sampled")
        self.item_ids = nn.Embedding(num_items, d, padding_idx=0, sparse=sparse) if cfg.use_item_ids else None
        self.target_freq = losses.TargetFrequency()  # what the sampled loss's correction reads
        if self.item_ids is not None:
            # ID-only: small random directions (they are normalized). Text + ID: zeros, so the text
            # places every item at the start and the ids learn each item's correction from there
            # (random ids would blur the text's neighbourhoods until trained away).
            nn.init.normal_(self.item_ids.weight, std=0.02) if not cfg.use_text else nn.init.zeros_(self.item_ids.weight)
        self.user = UserEncoder(cfg.user_encoder, num_scenarios, len(EVENT_TYPES))

    # -- catalog --------------------------------------------------------------------------------
    def set_catalog(self, scenario_items: torch.Tensor, item_text: torch.Tensor | None = None,
                    item_tokens: torch.Tensor | None = None, item_token_mask: torch.Tensor | None = None) -> None:
        self.scenario_items = scenario_items.to(torch.bool)
        if item_text is not None:
            self.item_text = item_text.float()
        if item_tokens is not None:
            self.item_tokens, self.item_token_mask = item_tokens.long(), item_token_mask.long()

    def set_prior(self, counts: torch.Tensor, weight: float) -> None:
        """counts [S, N+1]: each item's training interactions per scenario."""
        self.item_prior = torch.log1p(counts.float().clamp(min=0)).to(self.item_prior.device)
        self.prior_weight = torch.tensor(float(weight), device=self.item_prior.device)

    def set_dynamics(self, table: torch.Tensor, origin: torch.Tensor) -> None:
        """Popularity-dynamics features [S, T, N+1, F] and each scenario's first day [S]."""
        if self.dynamics is None:
            raise ValueError("this model has no popularity dynamics (model.item_dynamics: false)")
        self.dyn_table = table.to(torch.float16)
        self.dyn_origin = origin.long()

    def dynamics_bias(self, scenario: torch.Tensor, times: torch.Tensor | None,
                      ids: torch.Tensor | None = None) -> torch.Tensor:
        """The learned popularity-dynamics score [M, N+1] (or [M, C] at candidate ``ids`` [C]) of
        predictions in ``scenario`` [M] at ``times`` [M] (seconds; None: the newest counts).
        The features are read once per distinct (scenario, day) of the batch."""
        days = self.dyn_table.shape[1]
        if times is None:
            row = torch.full_like(scenario, days - 1)
        else:
            row = (times // DAY - self.dyn_origin[scenario]).clamp(0, days - 1)
        key, inverse = torch.unique(scenario * days + row, return_inverse=True)
        feats = self.dyn_table[key // days, key % days]  # [U, N+1, F]
        if ids is not None:
            feats = feats[:, ids]
        w = self.dynamics.weight[0]
        feats = feats.to(w.dtype)
        bias = feats @ w[:NUM_FEATURES] + torch.relu(feats) @ w[NUM_FEATURES:]
        return bias[inverse]

    def item_bias(self, scenario: torch.Tensor, times: torch.Tensor | None = None,
                  ids: torch.Tensor | None = None) -> torch.Tensor | None:
        """What a model adds to every cosine / temperature, [M, N+1] (or at ``ids``), for rows in
        ``scenario`` [M] predicted at ``times`` [M] (None: now, the newest counts): the
        popularity-dynamics score if the model has one, plus the zero-shot + counts prior if set.
        None when neither applies."""
        bias = None
        if self.dynamics is not None:
            bias = self.dynamics_bias(scenario, times, ids)
        if float(self.prior_weight) != 0:
            prior = self.prior_weight * self.item_prior[scenario]
            prior = prior if ids is None else prior[:, ids]
            bias = prior if bias is None else bias + prior
        return bias

    @property
    def text_trainable(self) -> bool:
        return self.item_encoder is not None and any(p.requires_grad for p in self.item_encoder.parameters())

    # -- vectors --------------------------------------------------------------------------------
    def item_vectors(self, ids: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
        """Normalized item vectors for ids (any shape), or for the whole catalog [N, D]."""
        flat = torch.arange(self.num_items, device=self.item_text.device) if ids is None else ids.reshape(-1)
        if self.text_proj is None:  # ID-only
            vec = F.normalize(self.item_ids(flat), dim=-1)
            return vec if ids is None else vec.reshape(*ids.shape, -1)
        if self.item_encoder is None:
            # Cached features, a block of rows at a time: the adaptor's whitening holds [rows,
            # experts, text_dim] floats (6 GB for a million items at once).
            blocks = flat.split(VECTOR_BLOCK) if len(flat) else [flat]
            vec = torch.cat([self.vectors_from_features(self.item_text[b], b) for b in blocks])
        else:
            uniq, inverse = torch.unique(flat, return_inverse=True)
            parts = [self.item_encoder(self.item_tokens[uniq[s:s + chunk]], self.item_token_mask[uniq[s:s + chunk]])
                     for s in range(0, len(uniq), chunk)]
            vec = self.vectors_from_features(torch.cat(parts)[inverse], flat)
        return vec if ids is None else vec.reshape(*ids.shape, -1)

    def vectors_from_features(self, feats: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Normalized item vectors [M, D] from text features [M, text_dim]; ``ids`` adds the id
        embeddings of catalog items (new items have none)."""
        if self.text_proj is None:
            raise ValueError("an ID-only model has no text tower: it cannot place items from text")
        feats = feats.to(self.text_proj[0].weight.dtype)
        linear, norm = self.text_proj
        vec = linear(feats)
        if self.adaptor is not None:
            vec = vec + self.adaptor(feats)
        vec = norm(vec)
        if self.item_ids is not None and ids is not None:
            # Text + ID: the id embedding is a residual on the unit text vector (see ID_RATE).
            vec = F.normalize(vec, dim=-1) + ID_RATE * self.item_ids(ids)
        return F.normalize(vec, dim=-1)

    def user_vectors(self, items: torch.Tensor, events: torch.Tensor, scenario: torch.Tensor,
                     catalog: torch.Tensor | None = None) -> torch.Tensor:
        """Interest vectors [B, L, D] (normalized) at every position of right-padded histories:
        items, events [B, L] (0 = pad); scenario [B] (each row's, as training batches have it)
        or [B, L] (each event's: a history that spans scenarios, as the endpoint gets it).
        ``catalog``: the vectors ``items`` index [M, D] when already computed (the whole
        catalog for a training step; the live catalog and texts for the endpoint). Training,
        evaluation and serving all encode users through this one function."""
        return F.normalize(self.user(*self.user_inputs(items, events, scenario, catalog)), dim=-1)

    def last_user_vector(self, items: torch.Tensor, events: torch.Tensor, scenario: torch.Tensor,
                         catalog: torch.Tensor | None = None) -> torch.Tensor:
        """The current interest [B, D]: ``user_vectors`` at each history's last event."""
        return F.normalize(self.user.last(*self.user_inputs(items, events, scenario, catalog)), dim=-1)

    def user_inputs(self, items, events, scenario, catalog=None):
        """The user encoder's arguments: item vectors, event mask, per-event scenarios, events."""
        return self.user.inputs(catalog[items] if catalog is not None else self.item_vectors(items), items, events,
                                scenario)

    # -- objective ------------------------------------------------------------------------------
    def loss_kind(self) -> str:
        if self.cfg.loss != "auto":
            return self.cfg.loss
        fits = self.num_items <= self.cfg.full_softmax_max_items
        return "full" if fits and not self.text_trainable else "sampled"

    def forward(self, items: torch.Tensor, events: torch.Tensor, scenario: torch.Tensor,
                targets: torch.Tensor, event_scenarios: torch.Tensor | None = None,
                times: torch.Tensor | None = None) -> torch.Tensor:
        """Mean next-item loss over all real positions (targets [B, L], 0 = no target; every
        target is in its row's ``scenario`` [B]). ``event_scenarios`` [B, L]: each event's
        scenario, for a history that spans scenarios (default: the row's). ``times`` [B, L]: each
        input event's timestamp, the time of the prediction made after it (popularity dynamics)."""
        full = self.loss_kind() == "full"
        catalog = self.item_vectors() if full else None  # computed once: history rows are gathered
        h = self.user_vectors(items, events, scenario if event_scenarios is None else event_scenarios, catalog)
        valid = targets != 0
        user = h[valid]
        target = targets[valid]
        scen = scenario.unsqueeze(1).expand_as(targets)[valid]
        if self.dynamics is not None and times is None:
            raise ValueError("a model with popularity dynamics trains on batches with event times")
        when = None if times is None else times[valid]
        if full:
            # One catalog for every scenario (or a single scenario): no per-row mask needed.
            mask = None if self.scenario_items[:, 1:].all() else self.scenario_items[scen]
            return losses.full_softmax_loss(user, catalog, target, self.cfg.temperature, allowed=mask,
                                            bias=self.item_bias(scen, when))
        freq = self.target_freq.update(target, self.num_items) if self.training else None  # None: the batch's shares
        ids, log_q = losses.candidates(target, self.num_items, self.cfg.num_negatives, freq)
        return losses.sampled_softmax_loss(user, self.item_vectors(ids), ids, target, log_q, self.cfg.temperature,
                                           bias=self.item_bias(scen, when, ids))

    @torch.no_grad()
    def scores(self, items: torch.Tensor, events: torch.Tensor, scenario: torch.Tensor,
               catalog: torch.Tensor | None = None, event_scenarios: torch.Tensor | None = None,
               time: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [B, N] of every catalog item for each user's current interest in ``scenario``
        [B] (``event_scenarios`` as in ``forward``), predicted at ``time`` [B] (seconds; None:
        now)."""
        user = self.last_user_vector(items, events, scenario if event_scenarios is None else event_scenarios, catalog)
        vecs = self.item_vectors() if catalog is None else catalog
        return logits(user, vecs, self.cfg.temperature, self.item_bias(scenario, time))
