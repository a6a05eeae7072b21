"""Fused backpropagation through time for the CTM's recurrence over a sequence of env steps.

Under autograd every internal tick records about 25 small ops and replays about 50 in the backward pass,
and every tick allocates and shifts two fresh ``(D, B, M)`` histories; at the paper's RL setting a PPO
minibatch re-runs 200 ticks in sequence, and that is most of the update's cost.  :class:`FusedSequence`
computes exactly what ``ContinuousThoughtMachine.forward_sequence`` computes, as a single autograd node
with a hand-written backward pass:

* **forward:** the ticks run without autograd on windows that are slices of one history buffer per
  sequence (one slot written per tick, see the class docstring), keeping only what the backward pass
  reads, in reused buffers;
* **backward:** the ticks run in reverse carrying the gradients of the pre- and post-activation windows;
  the synapse parameter gradients are one matmul over all ticks at the end.

It covers the reference RL agent's architecture: synapses made of ``Linear -> GLU -> LayerNorm`` blocks
(``synapse_depth`` 1) and neuron-level models made of ``NeuronLinear -> GLU`` layers, without dropout
(or in eval mode) and without the NLM LayerNorm, with a continuous state trace.  Other configurations
keep the autograd path in :mod:`ctm_rl.ctm`, which is also the reference the tests hold this one to.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable

aten = torch.ops.aten


class _Recurrence(NamedTuple):
    """What the fused pass needs to know about a CTM besides its parameters."""

    iterations: int  # ticks K per env step
    n_synapse_blocks: int
    n_nlm_layers: int
    ln_eps: tuple[float, ...]  # LayerNorm epsilon of every synapse block
    # The synchronisation's neuron pairs (i, j): all left members then all right members, gathered in one
    # index_select; and right then left, where each member's gradient goes (see _pair_products_backward).
    pairs: torch.Tensor
    swapped_pairs: torch.Tensor


def fused_parameters(ctm: nn.Module) -> tuple[_Recurrence, list[torch.Tensor]] | None:
    """The recurrence description and flat parameter list of ``ctm``, or None when it is not fusable."""
    if not ctm.continuous_state_trace:
        return None
    synapse_layers = list(ctm.synapses.children()) if isinstance(ctm.synapses, nn.Sequential) else []
    if synapse_layers and isinstance(synapse_layers[0], nn.Dropout):
        if synapse_layers[0].p > 0 and ctm.training:
            return None
        synapse_layers = synapse_layers[1:]
    if not synapse_layers or len(synapse_layers) % 3:
        return None
    blocks = [synapse_layers[i:i + 3] for i in range(0, len(synapse_layers), 3)]
    if not all(isinstance(lin, nn.Linear) and isinstance(glu, nn.GLU) and glu.dim == -1
               and isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and norm.bias is not None
               for lin, glu, norm in blocks):
        return None
    nlm_layers = list(ctm.nlm.layers.children())[0::2]
    if not all(isinstance(layer.norm, nn.Identity) and (isinstance(layer.dropout, nn.Identity) or not ctm.training)
               for layer in nlm_layers):
        return None

    recurrence = _Recurrence(
        iterations=ctm.iterations,
        n_synapse_blocks=len(blocks),
        n_nlm_layers=len(nlm_layers),
        ln_eps=tuple(norm.eps for _, _, norm in blocks),
        pairs=torch.cat((ctm.synch_left, ctm.synch_right)),
        swapped_pairs=torch.cat((ctm.synch_right, ctm.synch_left)),
    )
    # The first layer's feature columns are not the pass's: it takes their product with the features, the
    # feature term (see ContinuousThoughtMachine.feature_term), as an input.
    weights = [ctm.synapses.input_layer.weight[:, ctm.feature_dim:]] + [lin.weight for lin, _, _ in blocks[1:]]
    params = [p for weight, (lin, _, norm) in zip(weights, blocks) for p in (weight, lin.bias, norm.weight, norm.bias)]
    params += [p for layer in nlm_layers for p in (layer.weight, layer.bias, layer.temperature)]
    params += [ctm.start_trace, ctm.start_activated_trace, ctm.decay_params_out]
    return recurrence, params


def _decay(decay_params: torch.Tensor, memory_length: int) -> torch.Tensor:
    """Synchronisation weights ``exp(-r (M-1-m))``, ``(S, M)``: the same formula as the CTM's."""
    ages = torch.arange(memory_length - 1, -1, -1, dtype=decay_params.dtype, device=decay_params.device)
    return torch.exp(-decay_params.clamp(0.0, 4.0).unsqueeze(-1) * ages)


def _pair_products(rec: _Recurrence, posts: torch.Tensor, members: torch.Tensor | None = None,
                   out: torch.Tensor | None = None) -> torch.Tensor:
    """``post_i * post_j`` for every synchronised pair (i, j), over the first dimension of ``posts``.

    The pair members ``[left; right]`` are gathered into ``members`` and the products written into ``out``
    when these are given (the fused forward pass keeps the members for the backward pass).
    """
    members = torch.index_select(posts, 0, rec.pairs, out=members)
    n_pairs = len(members) // 2
    return torch.mul(members[:n_pairs], members[n_pairs:], out=out)


def _pair_products_backward(rec: _Recurrence, grad_posts: torch.Tensor, grad_products: torch.Tensor,
                            members: torch.Tensor) -> torch.Tensor:
    """Add the gradient of :func:`_pair_products` to ``grad_posts``, given the pair members ``[left; right]``
    it multiplied, which are overwritten: ``post_i`` gets ``g * post_j`` and ``post_j`` gets ``g * post_i``,
    so the members times ``g`` go to ``[right; left]``."""
    members.view(2, *grad_products.shape).mul_(grad_products)
    return grad_posts.index_add_(0, rec.swapped_pairs, members)


def _by_env(window: torch.Tensor) -> torch.Tensor:
    """A view of a batch-innermost tensor with the env dimension first.

    Index ops over a few envs (episode starts) run two to three times faster along the first dimension of
    this view than along the last dimension of the tensor itself.
    """
    return window.movedim(-1, 0)


class _Workspace:
    """Reuses the large per-sequence buffers between calls of the same shape.

    The activations saved for the backward pass are tens of MB at the paper's setting.  A fresh allocation
    of that size is new memory from the OS on every minibatch, whose page faults cost more than the
    arithmetic; a buffer is handed out again once the backward pass that used it is done.
    """

    max_shapes = 64  # the least recently returned shapes are dropped beyond this: sequences of many sizes

    def __init__(self):
        self._free: OrderedDict[tuple, list[torch.Tensor]] = OrderedDict()

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        free = self._free.get((shape, like.dtype, like.device), [])
        return free.pop() if free else like.new_empty(shape)

    def give_back(self, *buffers: torch.Tensor) -> None:
        for buffer in buffers:
            key = (tuple(buffer.shape), buffer.dtype, buffer.device)
            self._free.setdefault(key, []).append(buffer)
            self._free.move_to_end(key)
        while len(self._free) > self.max_shapes:
            self._free.popitem(last=False)


_workspace = _Workspace()


class FusedSequence(torch.autograd.Function):
    """``T`` env steps of the CTM as one autograd node; see the module docstring.

    Inputs: the recurrence, the feature terms ``(T, B, H)`` (``W_f f`` of each step's features ``f``), the
    start windows ``pre``/``post`` as ``(D, M, B)``,
    for each step the envs that start an episode there (an index tensor or None), then the parameters from
    :func:`fused_parameters`.  Outputs: synchronisation ``(T, B, S)`` and the final windows.

    **Windows as slices.**  The histories live in one ``(R, M + TK, B)`` buffer (row, history slot, env)
    holding every slot of the sequence: the window before tick ``t`` is the slice ``buffer[:, t:t + M]``,
    and tick ``t`` writes slot ``t + M`` instead of shifting all M slots.  The backward pass reads the same
    windows in reverse, restoring on the way the windows that episode starts replaced.  With the batch
    innermost, each neuron's history is an ``(M, B)`` matrix, for which CPU batched matmuls and GLUs are
    several times faster than with ``(B, M)``.

    **Rows.**  The buffer's rows are the ``D`` pre-activations, then the ``S`` products
    ``post_i * post_j`` of the synchronised pairs, then the ``D`` post-activations.  Keeping the pair
    products as a history of their own, one new slot per tick, makes each step's synchronisation a single
    decay-weighted sum over the product window, and its gradient a single outer product, where
    multiplying the pairs' whole post-activation windows again at every step would cost M times more.
    """

    @staticmethod
    def forward(ctx, rec: _Recurrence, feature_term, pre, post, reset_envs, *params):
        n_syn, n_nlm, K = rec.n_synapse_blocks, rec.n_nlm_layers, rec.iterations
        synapse = [params[4 * i:4 * i + 4] for i in range(n_syn)]
        nlm = [params[4 * n_syn + 3 * j:4 * n_syn + 3 * j + 3] for j in range(n_nlm)]
        start_pre, start_post, decay_params = params[-3:]
        T, B, _ = feature_term.shape
        D, M, _ = pre.shape
        S = len(rec.pairs) // 2
        TK = T * K

        # The feature term is the same for every tick of a step: the first layer's bias joins it once.  The
        # NLM temperatures are scalars: they fold into baddbmm's coefficients.
        feature_steps = (feature_term + synapse[0][1]).unbind(0)
        weight0_post = synapse[0][0].t()
        nlm = [(weight.transpose(1, 2), bias.unsqueeze(-1), 1.0 / float(temperature))
               for weight, bias, temperature in nlm]
        decay = _decay(decay_params, M).unsqueeze(1)  # (S, 1, M)
        norm = decay.sum(-1).sqrt()  # (S, 1)

        buffer = _workspace.take((2 * D + S, M + TK, B), pre)
        pre_buffer, product_buffer, post_buffer = buffer[:D], buffer[D:D + S], buffer[D + S:]
        pre_buffer[:, :M], post_buffer[:, :M] = pre, post
        product_buffer[:, :M] = _pair_products(rec, post)
        start_rows = torch.cat((start_pre, _pair_products(rec, start_post), start_post))
        # Saved for the backward pass besides the buffer: the windows that resets replaced, the pair members
        # of every tick, every tick's NLM outputs (before and after each GLU) and synapse activations.
        pair_posts = _workspace.take((TK, 2 * S, B), pre)
        nlm_h = [_workspace.take((TK, D, weight.shape[1], B), pre) for weight, _, _ in nlm]
        nlm_out = [_workspace.take((TK, D, weight.shape[1] // 2, B), pre) for weight, _, _ in nlm[:-1]]
        replaced = [None] * T
        # Each synapse block's matmul output h and GLU output x go straight into buffers for all ticks; the
        # LayerNorm statistics, and the outputs y of the inner blocks (the last one's is the pre slot), are
        # stacked at the end.
        synapse_h = [_workspace.take((TK, B, weight.shape[0]), pre) for weight, _, _, _ in synapse]
        synapse_x = [_workspace.take((TK, B, weight.shape[0] // 2), pre) for weight, _, _, _ in synapse]
        synapse_stats = {"mean": [[] for _ in range(n_syn)], "rstd": [[] for _ in range(n_syn)],
                         "y": [[] for _ in range(n_syn - 1)]}
        z_prev = _workspace.take((TK, B, D), pre)
        # Per-tick views made once: indexing inside the loop costs as much as some of its ops.
        pre_slots, product_slots, post_slots = pre_buffer.unbind(1), product_buffer.unbind(1), post_buffer.unbind(1)
        z_prev_ticks, pair_ticks = z_prev.unbind(0), pair_posts.unbind(0)
        # Every NLM layer writes its GLU output in place: the last one into the newest post-activation slot.
        nlm_h_ticks = [h.unbind(0) for h in nlm_h]
        nlm_out_ticks = [out.unbind(0) for out in nlm_out] + [post_buffer.unsqueeze(2).unbind(1)[M:]]
        synapse_weights = [(weight.t(), bias, ln_weight, ln_bias) for weight, bias, ln_weight, ln_bias in synapse]
        synapse_h_ticks, synapse_x_ticks = [h.unbind(0) for h in synapse_h], [x.unbind(0) for x in synapse_x]
        syncs = _workspace.take((T, S, 1, B), pre)  # each step's decay-weighted sum of products
        sync_steps = syncs.unbind(0)
        for s in range(T):
            reset = reset_envs[s]
            for k in range(K):
                t = s * K + k  # the window is slots [t, t + M); this tick writes slot t + M
                if k == 0 and reset is not None:
                    # Envs starting an episode think from the start traces: they replace their windows.
                    replaced[s] = _by_env(buffer[:D + S, t:t + M]).index_select(0, reset)
                    _by_env(buffer[:, t:t + M]).index_copy_(0, reset, start_rows.expand(len(reset), -1, -1))
                z = z_prev_ticks[t].copy_(post_slots[t + M - 1].t())
                x = torch.addmm(feature_steps[s], z, weight0_post, out=synapse_h_ticks[0][t])
                for i, (weight_t, bias, ln_weight, ln_bias) in enumerate(synapse_weights):
                    if i > 0:
                        x = torch.addmm(bias, x, weight_t, out=synapse_h_ticks[i][t])
                    x = aten.glu.out(x, -1, out=synapse_x_ticks[i][t])
                    x, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], ln_weight, ln_bias, rec.ln_eps[i])
                    synapse_stats["mean"][i].append(mean)
                    synapse_stats["rstd"][i].append(rstd)
                    if i < n_syn - 1:
                        synapse_stats["y"][i].append(x)
                pre_slots[t + M].copy_(x.t())
                x = pre_buffer[:, t + 1:t + M + 1]  # the window, (D, M, B)
                for j, (weight_t, bias, inv_temperature) in enumerate(nlm):
                    x = torch.baddbmm(bias, weight_t, x, beta=inv_temperature, alpha=inv_temperature,
                                      out=nlm_h_ticks[j][t])
                    x = aten.glu.out(x, 1, out=nlm_out_ticks[j][t])
                _pair_products(rec, post_slots[t + M], members=pair_ticks[t], out=product_slots[t + M])
            torch.bmm(decay, product_buffer[:, t + 1:t + M + 1], out=sync_steps[s])
        sync = (syncs.squeeze(2) / norm).transpose(1, 2)
        _workspace.give_back(syncs)
        final_pre, final_post = pre_buffer[:, TK:].clone(), post_buffer[:, TK:].clone()

        ctx.rec, ctx.reset_envs, ctx.inv_temperatures = rec, reset_envs, [inv for _, _, inv in nlm]
        ctx.synapse_saved = {key: [torch.stack(ticks, out=_workspace.take((TK, *ticks[0].shape), pre))
                                   for ticks in value] for key, value in synapse_stats.items()}
        ctx.synapse_saved.update(h=synapse_h, x=synapse_x)
        ctx.buffers = buffer, pair_posts, nlm_h, nlm_out, replaced, z_prev
        ctx.save_for_backward(post, sync, *params)
        return sync, final_pre, final_post

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sync, grad_pre, grad_post):
        if ctx.buffers is None:
            raise RuntimeError("the CTM's fused backward pass cannot run twice over the same forward pass; "
                               "set `fused_backward=False` to use autograd (retain_graph, double backward)")
        rec, reset_envs, inv_temperatures, synapse_saved = (ctx.rec, ctx.reset_envs, ctx.inv_temperatures,
                                                            ctx.synapse_saved)
        buffer, pair_posts, nlm_h, nlm_out, replaced, z_prev = ctx.buffers
        ctx.buffers = None  # they go back to the workspace below, and this pass rewinds them
        post, sync, *params = ctx.saved_tensors
        n_syn, n_nlm, K = rec.n_synapse_blocks, rec.n_nlm_layers, rec.iterations
        synapse = [params[4 * i:4 * i + 4] for i in range(n_syn)]
        nlm = [params[4 * n_syn + 3 * j:4 * n_syn + 3 * j + 3] for j in range(n_nlm)]
        start_post, decay_params = params[-2], params[-1]
        T, B, _ = sync.shape
        D, M, _ = post.shape
        S = len(rec.pairs) // 2
        TK = T * K
        weight0_post = synapse[0][0]
        decay = _decay(decay_params, M)
        norm = decay.sum(-1).sqrt()

        # Synchronisation: sync = (decay . product window) / norm.
        if grad_sync is None:
            grad_sync = sync.new_zeros(sync.shape)
        grad_weighted = grad_sync / norm  # (T, B, S): the gradient of decay . product window
        grad_norm = -(grad_weighted * sync).sum((0, 1))
        grad_weighted = grad_weighted.transpose(1, 2).unsqueeze(2).contiguous()  # (T, S, 1, B)
        grad_decay_weights = decay.new_zeros(S, M, B)  # summed over envs at the end

        # The recurrence in reverse.  The gradients of the buffer's slots accumulate in a buffer shaped
        # like it.
        pre_buffer, product_buffer = buffer[:D], buffer[D:D + S]
        grad_buffer = _workspace.take(tuple(buffer.shape), buffer).zero_()
        grad_pre_buffer, grad_product_buffer, grad_post_buffer = grad_buffer[:D], grad_buffer[D:D + S], grad_buffer[D + S:]
        if grad_pre is not None:
            grad_pre_buffer[:, TK:] = grad_pre
        if grad_post is not None:
            grad_post_buffer[:, TK:] = grad_post
        # The window gradients of the envs that reset, gathered into one buffer and summed at the end.  Its
        # capacity is rounded up to a power of two, so that the workspace hands it out again.
        reset_counts = [0 if reset is None else len(reset) for reset in reset_envs]
        n_resets = sum(reset_counts)
        capacity = 1 << max(n_resets - 1, 0).bit_length()
        grad_starts_buffer = _workspace.take((capacity, buffer.shape[0], M), buffer)
        grad_starts = grad_starts_buffer[:n_resets]
        grad_start_parts = grad_starts.split(reset_counts)
        # NLM layers compute h = (x W + b) / temperature.  The loop accumulates dL/dh-based sums and the
        # input gradient uses W / temperature; the division of the parameter gradients by the temperature
        # happens once at the end.  Weight gradients are accumulated transposed, (D, out, in): as
        # G @ X^T that batched matmul is twice as fast on CPU as X @ G^T.
        scaled_weights = [weight * inv for (weight, _, _), inv in zip(nlm, inv_temperatures)]
        # Bias gradients are accumulated per env, (D, out, B), and summed over envs at the end: one op a tick.
        grad_nlm = [(weight.new_zeros(weight.transpose(1, 2).shape), bias.new_zeros(*bias.shape, B))
                    for weight, bias, _ in nlm]
        # Every tick's gradients at the synapse blocks' GLU inputs (h) and LayerNorm outputs (y), for the
        # parameter gradients after the loop.
        grad_synapse_h = [_workspace.take(tuple(h.shape), h) for h in synapse_saved["h"]]
        grad_synapse_y = [_workspace.take(tuple(x.shape), x) for x in synapse_saved["x"]]  # x and y: same shape
        decay_column = decay.unsqueeze(-1)  # (S, M, 1)
        # Per-tick views made once, as in the forward pass; the synapse blocks and NLM layers in reverse.
        grad_product_slots, grad_post_slots = grad_product_buffer.unbind(1), grad_post_buffer.unbind(1)
        grad_pre_slots = grad_pre_buffer.unbind(1)
        pair_ticks = pair_posts.unbind(0)  # not read again once the backward pass has used them
        nlm_layers = [(nlm_h[j].unbind(0), nlm_out[j - 1].unbind(0) if j else None, *grad_nlm[j],
                       scaled_weights[j]) for j in reversed(range(n_nlm))]
        synapse_blocks = [(*(synapse_saved[key][i].unbind(0) for key in ("x", "mean", "rstd", "h")),
                           grad_synapse_h[i].unbind(0), grad_synapse_y[i - 1].unbind(0) if i else None,
                           [synapse[i][0].shape[0] // 2], synapse[i][0] if i else weight0_post, *synapse[i][2:])
                          for i in reversed(range(n_syn))]
        grad_synapse_out = grad_synapse_y[-1].unbind(0)
        for t in reversed(range(TK)):
            s, k = divmod(t, K)
            window, newest = slice(t + 1, t + M + 1), t + M  # after tick t
            if k == K - 1:  # the step's synchronisation read this window of products
                gradient = grad_weighted[s]  # (S, 1, B)
                grad_decay_weights.addcmul_(product_buffer[:, window], gradient)
                grad_product_buffer[:, window].addcmul_(decay_column, gradient)
            # The newest product, complete now, back to the newest post-activation.
            grad_newest_post = _pair_products_backward(rec, grad_post_slots[newest], grad_product_slots[newest],
                                                       pair_ticks[t])  # (D, B)
            # Neuron-level models: from the newest post-activation back to the pre-activation window.
            grad = grad_newest_post.unsqueeze(1)  # (D, 1, B)
            for h, layer_inputs, grad_weight_t, grad_bias, scaled_weight in nlm_layers:
                grad = aten.glu_backward(grad, h[t], 1)  # dL/dh
                layer_input = pre_buffer[:, window] if layer_inputs is None else layer_inputs[t]
                grad_weight_t.baddbmm_(grad, layer_input.transpose(1, 2))
                grad_bias.add_(grad)
                grad = torch.bmm(scaled_weight, grad)
            grad_pre_buffer[:, window] += grad
            # Synapses: from the newest pre-activation back to the previous tick's newest post-activation.
            grad = grad_synapse_out[t].copy_(grad_pre_slots[newest].t())
            for x, mean, rstd, h, grad_h, grad_y_before, width, weight, ln_weight, ln_bias in synapse_blocks:
                grad = aten.native_layer_norm_backward(grad, x[t], width, mean[t], rstd[t], ln_weight, ln_bias,
                                                       [True, False, False])[0]
                grad = aten.glu_backward.grad_input(grad, h[t], -1, grad_input=grad_h[t])
                if grad_y_before is None:
                    # The first block read the previous newest post-activation: its input gradient goes
                    # straight into that slot's (transposed) gradient, one op where mm and add_ were two.
                    grad_post_slots[newest - 1].t().addmm_(grad, weight)
                else:
                    grad = torch.mm(grad, weight, out=grad_y_before[t])
            if k == 0 and reset_envs[s] is not None:
                # These envs started from the learned start traces: their window gradients end there, and
                # their windows before the reset come back.
                reset, grad_window = reset_envs[s], _by_env(grad_buffer[:, t:t + M])
                torch.index_select(grad_window, 0, reset, out=grad_start_parts[s])
                grad_window.index_fill_(0, reset, 0.0)
                _by_env(buffer[:D + S, t:t + M]).index_copy_(0, reset, replaced[s])

        # Synapse parameter gradients: one matmul each over all T*K ticks and B envs.
        grads = []
        rows = TK * B
        for i in range(n_syn):
            grad_h, grad_y = grad_synapse_h[i].view(rows, -1), grad_synapse_y[i].view(rows, -1)
            if i == 0:
                # The feature term is the same for all ticks of a step: its gradient is their sum.
                grad_feature_term = grad_h.view(T, K, B, -1).sum(1)
                grad_weight = grad_h.t() @ z_prev.view(rows, -1)
            else:
                grad_weight = grad_h.t() @ synapse_saved["y"][i - 1].view(rows, -1)
            # In place in the saved GLU outputs, which are not read again: large fresh temporaries cost more
            # in page faults than in arithmetic.
            weighted_normalised = synapse_saved["x"][i].sub_(synapse_saved["mean"][i]).mul_(synapse_saved["rstd"][i])
            weighted_normalised = weighted_normalised.view(rows, -1).mul_(grad_y)
            grads += [grad_weight, grad_h.sum(0), weighted_normalised.sum(0), grad_y.sum(0)]
        # d loss / d temperature = -(<W, dW> + <b, db>) / temperature, with dW, db the gradients of W and b.
        for (weight, bias, temperature), (grad_weight_t, grad_bias), inv in zip(nlm, grad_nlm, inv_temperatures):
            grad_weight, grad_bias = grad_weight_t.transpose(1, 2) * inv, grad_bias.sum(-1) * inv
            grad_temperature = -((weight * grad_weight).sum() + (bias * grad_bias).sum()) * inv
            grads += [grad_weight, grad_bias, grad_temperature.view_as(temperature)]

        # The products of the start traces and of the initial windows, back to their post-activations.
        grad_start_pre, grad_start_products, grad_start_post = grad_starts.sum(0).split((D, S, D))
        grad_start_post = _pair_products_backward(rec, grad_start_post, grad_start_products,
                                                  start_post.index_select(0, rec.pairs))
        grad_pre = grad_pre_buffer[:, :M].clone()
        grad_post = _pair_products_backward(rec, grad_post_buffer[:, :M].clone(), grad_product_buffer[:, :M],
                                            post.index_select(0, rec.pairs))
        # decay = exp(-clamp(r, 0, 4) * age), norm = sqrt(sum_m decay): the chain rule back to r.
        grad_decay = grad_decay_weights.sum(-1) + (grad_norm / (2 * norm)).unsqueeze(-1)
        ages = torch.arange(M - 1, -1, -1, dtype=decay.dtype, device=decay.device)
        inside = (decay_params >= 0) & (decay_params <= 4)
        grads += [grad_start_pre, grad_start_post, -(grad_decay * decay * ages).sum(-1) * inside]
        _workspace.give_back(buffer, grad_buffer, grad_starts_buffer, pair_posts, z_prev, *nlm_h, *nlm_out,
                             *grad_synapse_h, *grad_synapse_y,
                             *(saved for value in synapse_saved.values() for saved in value))
        return (None, grad_feature_term, grad_pre, grad_post, None, *grads)


def fused_forward_sequence(
    recurrence: _Recurrence,
    params: list[torch.Tensor],
    feature_term: torch.Tensor,
    pre: torch.Tensor,
    post: torch.Tensor,
    episode_starts: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run :class:`FusedSequence` from batch-first ``(B, D, M)`` histories.

    :return: synchronisation ``(T, B, S)`` and the final pre/post histories, batch-first.
    """
    starts = episode_starts.to(torch.bool)
    counts = starts.sum(1).tolist()  # the one host sync: which envs reset at which step
    envs = starts.nonzero()[:, 1].split(counts)
    reset_envs = [index if count else None for index, count in zip(envs, counts)]
    sync, pre, post = FusedSequence.apply(recurrence, feature_term, pre.permute(1, 2, 0), post.permute(1, 2, 0),
                                          reset_envs, *params)
    return sync, pre.permute(2, 0, 1), post.permute(2, 0, 1)
