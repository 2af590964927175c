"""First-order optimizers written from their update rules (chapter 11).

Each class is a :class:`torch.optim.Optimizer` with the constructor arguments and the defaults of
its namesake in ``torch.optim`` (PyTorch 2.13), so that it drops into a training loop, a learning-rate
scheduler or a ``state_dict`` round trip unchanged. Its ``step`` is written here from the update
rule, with ``torch._foreach_*`` operations: one call per operation for all the tensors of a
parameter group, as torch.optim's own ``foreach`` implementation does, so that a step costs about
what torch's costs (the Part III benchmark measures the ratio). Nothing of torch.optim's ``step`` is
called.

- :class:`SGD`: gradient descent, with heavy-ball or Nesterov momentum, dampening and weight decay;
- :class:`Adagrad`: per-coordinate steps divided by the root of the sum of the squared gradients;
- :class:`RMSprop`: the same with an exponential average, optionally centred and with momentum;
- :class:`Adam`: bias-corrected first and second moments, optionally AMSGrad;
- :class:`AdamW`: Adam with decoupled weight decay.

torch.optim's keyword switches are accepted with torch's defaults: ``maximize=True`` (ascent, the step
of ``-g``) is implemented, ``foreach`` is accepted whatever its value (the step is always the foreach
one; the iterates are the same), and ``capturable``, ``differentiable`` or ``fused`` set to True are
refused with a ValueError rather than ignored; ``Adam(decoupled_weight_decay=True)`` is AdamW, as in
torch. ``load_state_dict`` checks the loaded groups the same way (a torch.optim state_dict loads).

In every rule ``g`` is the parameter's ``.grad`` (plus ``weight_decay * x`` where weight decay is
an L2 penalty), ``t`` the number of steps taken, counting the current one.
"""

from __future__ import annotations

import math
import numbers

import torch

__all__ = ["SGD", "Adagrad", "RMSprop", "Adam", "AdamW"]


# -- checks ---------------------------------------------------------------------------------------

def _number(name, value):
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _non_negative(name, value):
    value = _number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _unit_interval(name, value, closed=False):
    value = _number(name, value)
    if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be in [0, 1{']' if closed else ')'}, got {value}")
    return value


def _betas(betas):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    return (_unit_interval("betas[0]", betas[0]), _unit_interval("betas[1]", betas[1]))


def _flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_implementation_flags(owner, group):
    """torch.optim's keyword-only switches. ``maximize`` changes the step (ascent) and is implemented;
    ``foreach`` only chooses torch's implementation (ours is always the foreach one), so any value is
    accepted; ``capturable``, ``differentiable`` and ``fused`` ask for implementations that this module
    does not have and are refused when set, never ignored."""
    group["maximize"] = _flag("maximize", group.get("maximize", False))
    foreach = group.get("foreach")
    if foreach is not None and not isinstance(foreach, bool):
        raise TypeError(f"foreach must be None, True or False, got {foreach!r}")
    for name, refused in (("capturable", True), ("differentiable", True), ("fused", True)):
        if name in group and group[name] is not None and _flag(name, group[name]) is refused:
            raise ValueError(f"{name}=True is not supported by ad_lib.optim.{owner} (its step is the plain foreach "
                             f"one, under no_grad); use torch.optim.{owner} for a {name} step, or {name}=False")


class _ForeachOptimizer(torch.optim.Optimizer):
    """The shared frame: checked hyper-parameters (also in each added group) and the gradients' lists."""

    def __init__(self, params, defaults):
        self._check_group(dict(defaults))
        super().__init__(params, defaults)

    def _check_group(self, group):  # overridden: checks one group's hyper-parameters (ValueError/TypeError)
        group["lr"] = _non_negative("lr", group["lr"])
        group["weight_decay"] = _non_negative("weight_decay", group["weight_decay"])
        if "eps" in group:
            group["eps"] = _non_negative("eps", group["eps"])
        _check_implementation_flags(type(self).__name__, group)

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._check_group(self.param_groups[-1])

    def load_state_dict(self, state_dict):
        """torch's ``load_state_dict`` (from ours or from torch.optim's namesake), then the loaded groups'
        hyper-parameters checked as the constructor's (a torch ``maximize=True`` is honoured, a
        ``capturable``/``differentiable``/``fused`` one refused) and tensor step counts made ints."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                if key != "params":
                    group.setdefault(key, value)
            self._check_group(group)
        for state in self.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = int(state["step"].item())

    def _groups_with_grads(self):
        """Each group that has parameters with a gradient: (group, those parameters, their gradients), the
        gradients negated when the group maximizes (the step of -g, as torch.optim's ``maximize=True``)."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            for p in params:
                if p.grad.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not take sparse gradients")
                if p.is_complex():
                    raise TypeError(f"{type(self).__name__} takes real parameters, got {p.dtype}")
            if not params:
                continue
            grads = [p.grad for p in params]
            yield group, params, torch._foreach_neg(grads) if group["maximize"] else grads

    @staticmethod
    def _decayed(grads, params, weight_decay):
        # g + weight_decay * x, as new tensors (the parameters' .grad are left as they are)
        return torch._foreach_add(grads, params, alpha=weight_decay) if weight_decay != 0 else grads

    def _count_steps(self, params):
        """Adds one to each parameter's step count and returns the counts (t, the current step included)."""
        steps = []
        for p in params:
            state = self.state[p]
            state["step"] = state.get("step", 0) + 1
            steps.append(int(state["step"]))
        return steps

    def _closure(self, closure):
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()


# -- SGD ------------------------------------------------------------------------------------------

class SGD(_ForeachOptimizer):
    r"""Stochastic gradient descent, with momentum (heavy ball or Nesterov), dampening and weight decay.

    One step, for each parameter x with gradient g (plus ``weight_decay * x``):

    - without momentum: ``x <- x - lr g``;
    - with momentum mu: ``b <- mu b + (1 - dampening) g`` (``b <- g`` at the first step), then
      ``x <- x - lr b``, or with ``nesterov=True`` ``x <- x - lr (g + mu b)``.

    This is PyTorch's form. The slides write heavy-ball momentum as ``v <- gamma v + eta g``,
    ``x <- x - v``: the same iterates, with ``v = lr b`` while the learning rate is constant; and
    Nesterov's look-ahead gradient ``g(x - gamma v)`` becomes, in the variable ``x - gamma v``, the
    step above. The batch, stochastic or mini-batch character of gradient descent is in what the
    gradient is computed on, not in the step. See chapter 11, section "Momentum", :eq:`eq-ch11-momentum`,
    and section "Nesterov momentum", :eq:`eq-ch11-nesterov`.

    Parameters are those of :class:`torch.optim.SGD` (the default lr is 1e-3, as in torch 2.13);
    ``nesterov=True`` needs ``momentum > 0`` and ``dampening == 0``.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["momentum"] = _non_negative("momentum", group["momentum"])
        group["dampening"] = _number("dampening", group["dampening"])
        if not isinstance(group["nesterov"], bool):
            raise TypeError(f"nesterov must be True or False, got {group['nesterov']!r}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter that has a gradient; returns ``closure()`` if given."""
        loss = self._closure(closure)
        for group, params, grads in self._groups_with_grads():
            lr, mu, damp = group["lr"], group["momentum"], group["dampening"]
            grads = self._decayed(grads, params, group["weight_decay"])
            if mu != 0:
                states = [self.state[p] for p in params]
                if all("momentum_buffer" in s for s in states):
                    bufs = [s["momentum_buffer"] for s in states]
                    torch._foreach_mul_(bufs, mu)
                    torch._foreach_add_(bufs, grads, alpha=1 - damp)
                else:  # the first step: b = g
                    bufs = []
                    for s, g in zip(states, grads):
                        if "momentum_buffer" not in s:
                            s["momentum_buffer"] = g.detach().clone()
                        else:
                            s["momentum_buffer"].mul_(mu).add_(g, alpha=1 - damp)
                        bufs.append(s["momentum_buffer"])
                grads = torch._foreach_add(grads, bufs, alpha=mu) if group["nesterov"] else bufs
            torch._foreach_add_(params, grads, alpha=-lr)
        return loss


# -- Adagrad --------------------------------------------------------------------------------------

class Adagrad(_ForeachOptimizer):
    r"""Adagrad: each coordinate's step divided by the root of the sum of its squared gradients.

    ``G <- G + g^2`` (G starts at ``initial_accumulator_value``), then
    ``x <- x - lr_t g / (sqrt(G) + eps)`` with ``lr_t = lr / (1 + (t - 1) lr_decay)``.

    PyTorch adds eps outside the square root; the slides write ``sqrt(G + eps)``. The two differ only
    while G is of the order of eps or below (chapter 11 measures it). See chapter 11, section "Adagrad",
    :eq:`eq-ch11-adagrad`. Parameters are those of :class:`torch.optim.Adagrad`.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10,
                 foreach=None, *, maximize=False, differentiable=False, fused=None):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                        differentiable=differentiable, fused=fused)
        super().__init__(params, defaults)
        for group in self.param_groups:  # torch makes the state here, so that it is in state_dict at once
            for p in group["params"]:
                self.state[p].setdefault("step", 0)
                self.state[p].setdefault("sum", torch.full_like(
                    p, group["initial_accumulator_value"], memory_format=torch.preserve_format))

    def _check_group(self, group):
        super()._check_group(group)
        group["lr_decay"] = _non_negative("lr_decay", group["lr_decay"])
        group["initial_accumulator_value"] = _non_negative("initial_accumulator_value",
                                                           group["initial_accumulator_value"])

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter that has a gradient; returns ``closure()`` if given."""
        loss = self._closure(closure)
        for group, params, grads in self._groups_with_grads():
            steps = self._count_steps(params)
            for p in params:
                if "sum" not in self.state[p]:  # a parameter added after the constructor
                    self.state[p]["sum"] = torch.full_like(p, group["initial_accumulator_value"],
                                                           memory_format=torch.preserve_format)
            sums = [self.state[p]["sum"] for p in params]
            grads = self._decayed(grads, params, group["weight_decay"])
            minus_lr = [-group["lr"] / (1 + (t - 1) * group["lr_decay"]) for t in steps]
            torch._foreach_addcmul_(sums, grads, grads, value=1)
            std = torch._foreach_sqrt(sums)
            torch._foreach_add_(std, group["eps"])
            numerator = torch._foreach_mul(grads, minus_lr)
            torch._foreach_addcdiv_(params, numerator, std)
        return loss


# -- RMSprop --------------------------------------------------------------------------------------

class RMSprop(_ForeachOptimizer):
    r"""RMSProp: Adagrad's sum of squared gradients replaced by an exponential average.

    ``v <- alpha v + (1 - alpha) g^2``; centred: ``m <- alpha m + (1 - alpha) g`` and the
    denominator is ``sqrt(v - m^2) + eps`` (an estimate of the standard deviation), else
    ``sqrt(v) + eps``. Then ``x <- x - lr g / denominator``, or with momentum mu
    ``b <- mu b + g / denominator``, ``x <- x - lr b``. The slides' rule is ``alpha = 0.9``, eps inside
    the root. See chapter 11, section "RMSProp", :eq:`eq-ch11-rmsprop`. Parameters are those of
    :class:`torch.optim.RMSprop`.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        centered=centered, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["alpha"] = _unit_interval("alpha", group["alpha"], closed=True)
        group["momentum"] = _non_negative("momentum", group["momentum"])
        if not isinstance(group["centered"], bool):
            raise TypeError(f"centered must be True or False, got {group['centered']!r}")

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter that has a gradient; returns ``closure()`` if given."""
        loss = self._closure(closure)
        for group, params, grads in self._groups_with_grads():
            alpha, mu, centered = group["alpha"], group["momentum"], group["centered"]
            self._count_steps(params)
            for p in params:
                state = self.state[p]
                if "square_avg" not in state:
                    state["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if centered:
                        state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            grads = self._decayed(grads, params, group["weight_decay"])
            square_avgs = [self.state[p]["square_avg"] for p in params]
            torch._foreach_mul_(square_avgs, alpha)
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - alpha)
            if centered:
                grad_avgs = [self.state[p]["grad_avg"] for p in params]
                torch._foreach_lerp_(grad_avgs, grads, 1 - alpha)
                denominator = torch._foreach_addcmul(square_avgs, grad_avgs, grad_avgs, value=-1)
                torch._foreach_sqrt_(denominator)
            else:
                denominator = torch._foreach_sqrt(square_avgs)
            torch._foreach_add_(denominator, group["eps"])
            if mu > 0:
                bufs = [self.state[p]["momentum_buffer"] for p in params]
                torch._foreach_mul_(bufs, mu)
                torch._foreach_addcdiv_(bufs, grads, denominator)
                torch._foreach_add_(params, bufs, alpha=-group["lr"])
            else:
                torch._foreach_addcdiv_(params, grads, denominator, value=-group["lr"])
        return loss


# -- Adam and AdamW -------------------------------------------------------------------------------

class Adam(_ForeachOptimizer):
    r"""Adam: steps along the bias-corrected first moment, divided by the root of the second.

    ``m <- beta1 m + (1 - beta1) g``, ``v <- beta2 v + (1 - beta2) g^2`` (both start at zero), then
    ``x <- x - lr m_hat / (sqrt(v_hat) + eps)`` with ``m_hat = m / (1 - beta1^t)`` and
    ``v_hat = v / (1 - beta2^t)``: the corrections undo the averages' pull towards their zero start.
    With ``amsgrad=True`` the denominator uses the running maximum of v. Weight decay is an L2
    penalty, added to g (see :class:`AdamW` for the decoupled form). See chapter 11, section
    "Adam and its bias correction", :eq:`eq-ch11-adam`. Parameters are those of :class:`torch.optim.Adam`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        group["betas"] = _betas(group["betas"])
        if not isinstance(group["amsgrad"], bool):
            raise TypeError(f"amsgrad must be True or False, got {group['amsgrad']!r}")
        group["decoupled_weight_decay"] = _flag("decoupled_weight_decay", group.get("decoupled_weight_decay", False))

    @torch.no_grad()
    def step(self, closure=None):
        """One step for every parameter that has a gradient; returns ``closure()`` if given."""
        loss = self._closure(closure)
        for group, params, grads in self._groups_with_grads():
            lr, (beta1, beta2), wd, amsgrad = group["lr"], group["betas"], group["weight_decay"], group["amsgrad"]
            steps = self._count_steps(params)
            for p in params:
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    if amsgrad:
                        state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if wd != 0:
                if group["decoupled_weight_decay"]:
                    torch._foreach_mul_(params, 1 - lr * wd)
                else:
                    grads = self._decayed(grads, params, wd)
            exp_avgs = [self.state[p]["exp_avg"] for p in params]
            exp_avg_sqs = [self.state[p]["exp_avg_sq"] for p in params]
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            minus_step_size = [-lr / (1 - beta1 ** t) for t in steps]
            bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in steps]
            if amsgrad:
                max_sqs = [self.state[p]["max_exp_avg_sq"] for p in params]
                torch._foreach_maximum_(max_sqs, exp_avg_sqs)
                denominator = torch._foreach_sqrt(max_sqs)
            else:
                denominator = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denominator, bias_correction2_sqrt)
            torch._foreach_add_(denominator, group["eps"])
            torch._foreach_addcdiv_(params, exp_avgs, denominator, minus_step_size)
        return loss


class AdamW(Adam):
    r"""AdamW: Adam with decoupled weight decay.

    Before Adam's step (taken on the plain gradient), ``x <- x (1 - lr weight_decay)``: the decay is
    not divided by ``sqrt(v_hat)``, unlike Adam's L2 penalty, so every coordinate shrinks at the same
    rate. See chapter 11, section "AdamW: decoupled weight decay", :eq:`eq-ch11-adamw`. Parameters are
    those of :class:`torch.optim.AdamW` (default weight_decay 1e-2).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, foreach=foreach, capturable=capturable, differentiable=differentiable,
                         fused=fused, decoupled_weight_decay=True)
