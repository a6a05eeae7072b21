"""Fused backpropagation through time for the CTM's recurrence over a sequence of env steps.

Under autograd every internal tick records about 25 small ops and replays about 50 in the backward pass,
and every tick allocates and shifts two fresh ``(D, B, M)`` histories; at the paper's RL setting a PPO
minibatch re-runs 200 ticks in sequence, and that is most of the update's cost.  :class:`FusedSequence`
computes exactly what ``ContinuousThoughtMachine.forward_sequence`` computes, as a single autograd node
with a hand-written backward pass:

* **forward:** the ticks run without autograd on sliding windows (one slot written per tick, see the
  class docstring), keeping only what the backward pass reads, in reused buffers;
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

    n_feature: int  # width F of the backbone features (the first columns of the first synapse layer)
    iterations: int  # ticks K per env step
    n_synapse_blocks: int
    n_nlm_layers: int
    ln_eps: tuple[float, ...]  # LayerNorm epsilon of every synapse block
    selected: torch.Tensor  # the neurons the synchronisation reads
    left: torch.Tensor  # pair members as positions in ``selected``
    right: torch.Tensor


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

    pairs = torch.cat((ctm.synch_left, ctm.synch_right))
    selected, positions = torch.unique(pairs, return_inverse=True)
    n_pairs = ctm.synch_left.numel()
    recurrence = _Recurrence(
        n_feature=blocks[0][0].in_features - ctm.d_model,
        iterations=ctm.iterations,
        n_synapse_blocks=len(blocks),
        n_nlm_layers=len(nlm_layers),
        ln_eps=tuple(norm.eps for _, _, norm in blocks),
        selected=selected,
        left=positions[:n_pairs],
        right=positions[n_pairs:],
    )
    params = [p for lin, _, norm in blocks for p in (lin.weight, lin.bias, norm.weight, norm.bias)]
    params += [p for layer in nlm_layers for p in (layer.weight, layer.bias, layer.temperature)]
    params += [ctm.start_trace, ctm.start_activated_trace, ctm.decay_params_out]
    return recurrence, params


def _decay(decay_params: torch.Tensor, memory_length: int) -> torch.Tensor:
    """Synchronisation weights ``exp(-r (M-1-m))``, ``(S, M)``: the same formula as the CTM's."""
    ages = torch.arange(memory_length - 1, -1, -1, dtype=decay_params.dtype, device=decay_params.device)
    return torch.exp(-decay_params.clamp(0.0, 4.0).unsqueeze(-1) * ages)


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

    Inputs: the recurrence, features ``(T, B, F)``, the start windows ``pre``/``post`` as ``(D, M, B)``,
    for each step the envs that start an episode there (an index tensor or None), then the parameters from
    :func:`fused_parameters`.  Outputs: synchronisation ``(T, B, S)`` and the final windows.

    **Sliding windows.**  Each history lives in a ``(D, L, B)`` buffer (neuron, history slot, env) with
    ``L = 3M``; the current window is the slice ``buffer[:, p - M:p]``.  A tick writes one slot and moves
    ``p`` on, instead of shifting all M slots; only every ``L - M`` ticks is the window copied back to the
    start.  The backward pass slides the same buffer the other way, re-inserting each window's oldest
    slot (saved in the forward pass) and restoring the windows that episode starts replaced.  With the
    batch innermost, each neuron's history is an ``(M, B)`` matrix, for which CPU batched matmuls and GLUs
    are several times faster than with ``(B, M)``.
    """

    @staticmethod
    def forward(ctx, rec: _Recurrence, features, pre, post, reset_envs, *params):
        n_syn, n_nlm, K = rec.n_synapse_blocks, rec.n_nlm_layers, rec.iterations
        synapse = [params[4 * i:4 * i + 4] for i in range(n_syn)]
        nlm = [params[4 * n_syn + 3 * j:4 * n_syn + 3 * j + 3] for j in range(n_nlm)]
        start_pre, start_post, decay_params = params[-3:]
        start_traces = torch.stack((start_pre, start_post)).unsqueeze(0)  # (1, 2, D, M)
        T, B, _ = features.shape
        D, M, _ = pre.shape
        TK, L = T * K, 3 * M

        # The feature part of the first synapse layer is the same for every tick of a step: one matmul for
        # the whole sequence.  The NLM temperatures are scalars: they fold into baddbmm's coefficients.
        weight0, bias0 = synapse[0][0], synapse[0][1]
        feature_term = torch.addmm(bias0, features.reshape(T * B, -1), weight0[:, :rec.n_feature].t())
        feature_term = feature_term.view(T, B, -1)
        weight0_post = weight0[:, rec.n_feature:].t()
        nlm = [(weight.transpose(1, 2), bias.unsqueeze(-1), 1.0 / float(temperature))
               for weight, bias, temperature in nlm]
        decay = _decay(decay_params, M)
        norm = decay.sum(-1).sqrt()

        # The pre- and post-activation windows move together: one (2, D, L, B) buffer.
        buffers = _workspace.take((2, D, L, B), pre)
        pre_buffer, post_buffer = buffers
        pre_buffer[:, :M], post_buffer[:, :M] = pre, post
        p = M
        # Saved for the backward pass: each window's oldest slot, the windows that resets replaced, and
        # every tick's NLM outputs (before and after each GLU) and synapse activations.
        oldest = _workspace.take((TK, D, B), pre)
        nlm_h = [_workspace.take((TK, D, weight.shape[1], B), pre) for weight, _, _ in nlm]
        nlm_out = [_workspace.take((TK, D, weight.shape[1] // 2, B), pre) for weight, _, _ in nlm[:-1]]
        replaced = [None] * T
        synapse_saved = {key: [[] for _ in range(n_syn)] for key in ("h", "x", "mean", "rstd", "y")}
        z_prev = _workspace.take((TK, B, D), pre)
        selected_posts, syncs = [], []
        for s in range(T):
            reset = reset_envs[s]
            for k in range(K):
                t = s * K + k
                if p == L:  # slide back to the start of the buffers
                    buffers[:, :, :M] = buffers[:, :, L - M:]
                    p = M
                oldest[t] = pre_buffer[:, p - M]
                if k == 0 and reset is not None:
                    # Envs starting an episode think from the start traces: they replace their windows.
                    replaced[s] = _by_env(pre_buffer[:, p - M:p]).index_select(0, reset)
                    _by_env(buffers[:, :, p - M:p]).index_copy_(0, reset, start_traces.expand(len(reset), -1, -1, -1))
                z_prev[t] = post_buffer[:, p - 1].t()
                x = torch.addmm(feature_term[s], z_prev[t], weight0_post)
                for i, (weight, bias, ln_weight, ln_bias) in enumerate(synapse):
                    if i > 0:
                        x = torch.addmm(bias, x, weight.t())
                    synapse_saved["h"][i].append(x)
                    x = nn.functional.glu(x)
                    synapse_saved["x"][i].append(x)
                    x, mean, rstd = torch.native_layer_norm(x, [x.shape[-1]], ln_weight, ln_bias, rec.ln_eps[i])
                    synapse_saved["mean"][i].append(mean)
                    synapse_saved["rstd"][i].append(rstd)
                    synapse_saved["y"][i].append(x)
                pre_buffer[:, p] = x.t()
                x = pre_buffer[:, p - M + 1:p + 1]  # the window, (D, M, B)
                for j, (weight_t, bias, inv_temperature) in enumerate(nlm):
                    x = torch.baddbmm(bias, weight_t, x, beta=inv_temperature, alpha=inv_temperature,
                                      out=nlm_h[j][t])
                    x = aten.glu(x, 1, out=nlm_out[j][t]) if j < n_nlm - 1 else aten.glu(x, 1)
                post_buffer[:, p] = x.squeeze(1)
                p += 1
            selected_post = post_buffer[:, p - M:p].index_select(0, rec.selected)  # (n_selected, M, B)
            selected_posts.append(selected_post)
            products = selected_post.index_select(0, rec.left) * selected_post.index_select(0, rec.right)
            syncs.append(torch.bmm(decay.unsqueeze(1), products).squeeze(1).t())
        sync = torch.stack(syncs) / norm
        final_pre, final_post = pre_buffer[:, p - M:p].clone(), post_buffer[:, p - M:p].clone()

        ctx.rec, ctx.reset_envs, ctx.inv_temperatures = rec, reset_envs, [inv for _, _, inv in nlm]
        ctx.synapse_saved = {key: [torch.stack(ticks, out=_workspace.take((TK, *ticks[0].shape), pre))
                                   for ticks in value] for key, value in synapse_saved.items()}
        ctx.buffers = buffers, p, oldest, nlm_h, nlm_out, replaced, z_prev
        ctx.selected_post = torch.stack(selected_posts)
        ctx.save_for_backward(features, sync, *params)
        return sync, final_pre, final_post

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_sync, grad_pre, grad_post):
        if ctx.buffers is None:
            raise RuntimeError("the CTM's fused backward pass cannot run twice over the same forward pass; "
                               "set `fused_backward=False` to use autograd (retain_graph, double backward)")
        rec, reset_envs, inv_temperatures, synapse_saved = (ctx.rec, ctx.reset_envs, ctx.inv_temperatures,
                                                            ctx.synapse_saved)
        buffers, p, oldest, nlm_h, nlm_out, replaced, z_prev = ctx.buffers
        ctx.buffers = None  # they go back to the workspace below, and this pass rewinds them
        pre_buffer = buffers[0]
        features, sync, *params = ctx.saved_tensors
        n_syn, n_nlm, K = rec.n_synapse_blocks, rec.n_nlm_layers, rec.iterations
        synapse = [params[4 * i:4 * i + 4] for i in range(n_syn)]
        nlm = [params[4 * n_syn + 3 * j:4 * n_syn + 3 * j + 3] for j in range(n_nlm)]
        start_pre, decay_params = params[-3], params[-1]
        T, B, _ = features.shape
        D, M = start_pre.shape
        TK, L = T * K, pre_buffer.shape[1]
        weight0_post = synapse[0][0][:, rec.n_feature:]
        decay = _decay(decay_params, M)
        norm = decay.sum(-1).sqrt()

        # Synchronisation: sync = (products . decay) / norm, products = post_left * post_right.
        if grad_sync is None:
            grad_sync = sync.new_zeros(sync.shape)
        grad_weighted = grad_sync / norm  # (T, B, S): the gradient of products . decay
        grad_norm = -(grad_weighted * sync).sum((0, 1))
        grad_weighted = grad_weighted.transpose(1, 2).unsqueeze(2).contiguous()  # (T, S, 1, B)
        grad_decay_weights = decay.new_zeros(decay.shape[0], M, B)  # summed over envs at the end

        # The recurrence in reverse.  The gradients of the pre/post windows slide over buffers shaped like
        # the pre-activation one, in step with it: window t is slice [:, q:q + M] of all three.
        q = p - M
        grad_buffers = pre_buffer.new_zeros(2, D, L, B)
        grad_pre_buffer, grad_post_buffer = grad_buffers
        if grad_pre is not None:
            grad_pre_buffer[:, q:q + M] = grad_pre
        if grad_post is not None:
            grad_post_buffer[:, q:q + M] = grad_post
        grad_start_traces = pre_buffer.new_zeros(2, D, M)
        # NLM layers compute h = (x W + b) / temperature.  The loop accumulates dL/dh-based sums and the
        # input gradient uses W / temperature; the division of the parameter gradients by the temperature
        # happens once at the end.  Weight gradients are accumulated transposed, (D, out, in): as
        # G @ X^T that batched matmul is twice as fast on CPU as X @ G^T.
        scaled_weights = [weight * inv for (weight, _, _), inv in zip(nlm, inv_temperatures)]
        grad_nlm = [(weight.new_zeros(weight.transpose(1, 2).shape), torch.zeros_like(bias))
                    for weight, bias, _ in nlm]
        # Every tick's gradients at the synapse blocks' GLU inputs (h) and LayerNorm outputs (y), for the
        # parameter gradients after the loop.
        grad_synapse_h = [_workspace.take(tuple(h.shape), h) for h in synapse_saved["h"]]
        grad_synapse_y = [_workspace.take(tuple(y.shape), y) for y in synapse_saved["y"]]
        for t in reversed(range(TK)):
            s, k = divmod(t, K)
            if k == K - 1:
                selected_post = ctx.selected_post[s]
                lefts = selected_post.index_select(0, rec.left)  # (S, M, B)
                rights = selected_post.index_select(0, rec.right)
                gradient = grad_weighted[s]
                grad_decay_weights.addcmul_(lefts * rights, gradient)
                grad_products = decay.unsqueeze(-1) * gradient
                grad_selected = torch.zeros_like(selected_post)
                grad_selected.index_add_(0, rec.left, grad_products * rights)
                grad_selected.index_add_(0, rec.right, grad_products * lefts)
                grad_post_buffer[:, q:q + M].index_add_(0, rec.selected, grad_selected)
            # Neuron-level models: from the newest post-activation back to the pre-activation window.
            grad = grad_post_buffer[:, q + M - 1].unsqueeze(1)  # (D, 1, B)
            for j in reversed(range(n_nlm)):
                grad = aten.glu_backward(grad, nlm_h[j][t], 1)  # dL/dh
                grad_weight_t, grad_bias = grad_nlm[j]
                layer_input = pre_buffer[:, q:q + M] if j == 0 else nlm_out[j - 1][t]
                grad_weight_t.baddbmm_(grad, layer_input.transpose(1, 2))
                grad_bias += grad.sum(-1)
                grad = torch.bmm(scaled_weights[j], grad)
            grad_pre_buffer[:, q:q + M] += grad
            # Synapses: from the newest pre-activation back to the previous tick's newest post-activation.
            grad = grad_synapse_y[-1][t].copy_(grad_pre_buffer[:, q + M - 1].t())
            for i in reversed(range(n_syn)):
                weight, _, ln_weight, ln_bias = synapse[i]
                grad = aten.native_layer_norm_backward(
                    grad, synapse_saved["x"][i][t], [grad.shape[-1]], synapse_saved["mean"][i][t],
                    synapse_saved["rstd"][i][t], ln_weight, ln_bias, [True, False, False])[0]
                grad = aten.glu_backward.grad_input(grad, synapse_saved["h"][i][t], -1,
                                                    grad_input=grad_synapse_h[i][t])
                if i > 0:
                    grad = torch.mm(grad, weight, out=grad_synapse_y[i - 1][t])
                else:
                    grad = grad @ weight0_post
            # Slide back to the window before tick t: its oldest slot comes back, with no gradient yet.
            if q == 0:
                pre_buffer[:, L - M:] = pre_buffer[:, :M]
                grad_buffers[:, :, L - M:] = grad_buffers[:, :, :M]
                q = L - M
            q -= 1
            pre_buffer[:, q] = oldest[t]
            grad_buffers[:, :, q] = 0.0
            grad_post_buffer[:, q + M - 1] += grad.t()  # the synapses read the newest post-activation
            if k == 0 and reset_envs[s] is not None:
                # These envs started from the learned start traces: their window gradients end there, and
                # their windows before the reset come back.
                reset = reset_envs[s]
                grad_start_traces += _by_env(grad_buffers[:, :, q:q + M]).index_select(0, reset).sum(0)
                _by_env(grad_buffers[:, :, q:q + M]).index_fill_(0, reset, 0.0)
                _by_env(pre_buffer[:, q:q + M]).index_copy_(0, reset, replaced[s])

        # Synapse parameter gradients: one matmul each over all T*K ticks and B envs.
        grads = []
        rows = TK * B
        for i, (weight, _, _, _) in enumerate(synapse):
            grad_h, grad_y = grad_synapse_h[i].view(rows, -1), grad_synapse_y[i].view(rows, -1)
            if i == 0:
                grad_h_step = grad_h.view(T, K, B, -1).sum(1).view(T * B, -1)
                grad_features = (grad_h_step @ weight[:, :rec.n_feature]).view(T, B, -1)
                grad_weight = torch.cat((grad_h_step.t() @ features.reshape(T * B, -1),
                                         grad_h.t() @ z_prev.view(rows, -1)), dim=1)
            else:
                grad_weight = grad_h.t() @ synapse_saved["y"][i - 1].view(rows, -1)
            normalised = (synapse_saved["x"][i] - synapse_saved["mean"][i]) * synapse_saved["rstd"][i]
            grads += [grad_weight, grad_h.sum(0), (grad_y * normalised.view(rows, -1)).sum(0), grad_y.sum(0)]
        _workspace.give_back(buffers, oldest, z_prev, *nlm_h, *nlm_out, *grad_synapse_h, *grad_synapse_y,
                             *(buffer for value in synapse_saved.values() for buffer in value))
        # d loss / d temperature = -(<W, dW> + <b, db>) / temperature, with dW, db the gradients of W and b.
        for (weight, bias, temperature), (grad_weight_t, grad_bias), inv in zip(nlm, grad_nlm, inv_temperatures):
            grad_weight, grad_bias = grad_weight_t.transpose(1, 2) * inv, grad_bias * inv
            grad_temperature = -((weight * grad_weight).sum() + (bias * grad_bias).sum()) * inv
            grads += [grad_weight, grad_bias, grad_temperature.view_as(temperature)]
        # decay = exp(-clamp(r, 0, 4) * age), norm = sqrt(sum_m decay): the chain rule back to r.
        grad_decay = grad_decay_weights.sum(-1) + (grad_norm / (2 * norm)).unsqueeze(-1)
        ages = torch.arange(M - 1, -1, -1, dtype=decay.dtype, device=decay.device)
        inside = (decay_params >= 0) & (decay_params <= 4)
        grads += [*grad_start_traces, -(grad_decay * decay * ages).sum(-1) * inside]
        grad_pre, grad_post = grad_pre_buffer[:, q:q + M], grad_post_buffer[:, q:q + M]
        return (None, grad_features, grad_pre, grad_post, None, *grads)


def fused_forward_sequence(
    recurrence: _Recurrence,
    params: list[torch.Tensor],
    features: torch.Tensor,
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
    sync, pre, post = FusedSequence.apply(recurrence, features, pre.permute(1, 2, 0), post.permute(1, 2, 0),
                                          reset_envs, *params)
    return sync, pre.permute(2, 0, 1), post.permute(2, 0, 1)
