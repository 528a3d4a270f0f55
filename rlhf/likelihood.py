"""Beyond the paper: a reward model that also reads its trunk's likelihood of the response
(`rm.likelihood_weight`, rlhf/reward.py).

The paper's RM (section 3.5) is the SFT model with its unembedding replaced by a scalar head
read at the last token. On the Tiny World that RM judges form, not correctness: it prefers the
right answer of a right/wrong pair 59% of the time, while the SFT model it starts from, ranking
by its own likelihood, prefers it 88% of the time (benchmarks/rm_correct_vs_wrong.py
--likelihood). Nothing in 1,628 rankings teaches the scalar head to compare each answer token
with what the trunk predicted there. This RM adds that comparison:

    r(x, y) = head(h_last) + w * mean_t log p(y_t | x, y_<t)

where p reads the trunk's hidden states through its tied input embedding (the unembedding the
paper removes; models with untied embeddings are refused), the mean runs over the response's
tokens and its EOS, and w is a learned scalar starting at rm.likelihood_weight. Trained end to
end with the same K-wise loss (Eq. 1), so the rankings also tune the trunk's likelihood.
Saved as the usual AutoModelForSequenceClassification plus w in reward_bias.json."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.modeling_outputs import SequenceClassifierOutput

from rlhf.errors import RunError


def check_tied(model: torch.nn.Module, where: str) -> None:
    """The likelihood needs the unembedding, which a sequence classifier keeps only as the
    input embedding it is tied to."""
    if not getattr(model.config, "tie_word_embeddings", False):
        raise RunError(
            f"{where}: rm.likelihood_weight needs a model whose output unembedding is tied to "
            f"its input embedding ({model.config.model_type} here is not); set it to 0"
        )


def mean_logprob(
    embedding: torch.Tensor,
    hidden_prev: torch.Tensor,
    targets: torch.Tensor,
    seq: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """(n,) mean log p of each sequence's response tokens. hidden_prev (M, H): the hidden state
    before each of the M response tokens; targets (M,): those tokens; seq (M,): the sequence
    each belongs to; embedding (V, H): the tied unembedding."""
    logp = -F.cross_entropy(hidden_prev @ embedding.T, targets, reduction="none")  # (M,)
    total = logp.new_zeros(n).index_add(0, seq, logp)
    count = logp.new_zeros(n).index_add(0, seq, torch.ones_like(logp))
    return total / count.clamp(min=1)


def padded_logprob(
    unembedding: torch.Tensor,
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
) -> torch.Tensor:
    """(N,) from a right-padded batch: unembedding (V, H), hidden (N, T, H), input_ids (N, T),
    response_mask (N, T) true at the response's tokens and its EOS (never at position 0)."""
    rows, cols = response_mask[:, 1:].nonzero(as_tuple=True)  # token (rows, cols + 1)
    return mean_logprob(
        unembedding,
        hidden[rows, cols],
        input_ids[rows, cols + 1],
        rows,
        len(input_ids),
    )


def rewards(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    weight: torch.Tensor | float,
) -> torch.Tensor:
    """(N,) head(h at the last non-pad token) + weight * mean log p(response), right padding."""
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask)
    hidden = hidden.last_hidden_state  # (N, T, H)
    last = attention_mask.sum(1) - 1  # (N,) right padding: the last real token
    head = model.score(hidden[torch.arange(len(input_ids)), last]).squeeze(-1)  # (N,)
    unembedding = model.get_input_embeddings().weight  # (V, H): tied (check_tied)
    return head + weight * padded_logprob(unembedding, hidden, input_ids, response_mask)


class LikelihoodRM(torch.nn.Module):
    """What the Trainer trains: the sequence classifier and the weight w, returning
    SequenceClassifierOutput(logits (N, 1)) as the classifier alone does."""

    def __init__(self, model: torch.nn.Module, weight: float):
        super().__init__()
        check_tied(model, "rm.likelihood_weight")
        self.model = model
        self.weight = torch.nn.Parameter(torch.tensor(float(weight)))
        self.config = model.config  # what the Trainer and accelerate read

    def forward(self, input_ids, attention_mask, response_mask) -> SequenceClassifierOutput:
        r = rewards(self.model, input_ids, attention_mask, response_mask, self.weight)
        return SequenceClassifierOutput(logits=r[:, None])
