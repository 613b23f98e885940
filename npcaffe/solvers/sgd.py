"""The update rules: SGD and its descendants (Caffe's sgd_solver.cpp and solvers/*.cpp).

ApplyUpdate, per iteration:
    rate = GetLearningRate()                  (npcaffe.solvers.lr_policy)
    ClipGradients: if clip_gradients >= 0 and ||all diffs||_2 > clip, scale every diff
                   (upstream quirk kept: the norm is taken before Normalize, so with
                   iter_size k it is the norm of the k summed gradients)
    for each learnable param i:
        Normalize:  diff *= 1 / iter_size                     (when iter_size > 1)
        Regularize: diff += weight_decay * decay_mult_i * data          (L2)
                    diff += weight_decay * decay_mult_i * sign(data)    (L1)
                    diff += ∂R/∂w of structured_sparsity_param's regularisers, when set
                    (SSL's group lasso, slimming's L1 on γ: npcaffe.solvers.structured_sparsity)
        ComputeUpdateValue(i, rate), local_rate = rate * lr_mult_i:
            SGD       h = momentum * h + local_rate * diff;  diff = h
            Nesterov  h' = momentum * h + local_rate * diff;  diff = (1 + momentum) h' - momentum h
            AdaGrad   h += diff^2;  diff = local_rate * diff / (sqrt(h) + delta)
            RMSProp   h = rms_decay h + (1 - rms_decay) diff^2;  diff = local_rate * diff / (sqrt(h) + delta)
            AdaDelta  h = m h + (1 - m) diff^2;  diff *= sqrt((u + delta) / (h + delta));
                      u = m u + (1 - m) diff^2;  diff *= local_rate
            Adam      m = b1 m + (1 - b1) diff;  v = b2 v + (1 - b2) diff^2;
                      diff = local_rate * sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + delta), t = iter + 1
    net.update(): data -= diff (DNS masks skipped; they are still regularized and get history)
    iter += 1

Arithmetic is float32 in upstream's order.  The BLAS calls are mirrored as
the upstream build runs them (OpenBLAS 0.3.21, Haswell kernels, see
../shared/crosscheck/lenet5-dns/README.txt): caffe_axpy is saxpy, whose
vector loop computes y + a*x with one fused multiply-add, emulated here
exactly in float64 (the product of two floats is exact in double; one
rounding to double then to float can differ from a single rounding only in
ties, at most 1 ulp, not seen in practice), while its scalar tail loop, the
last n % 32 elements, rounds a*x and then the sum (npcaffe.kernels.sgd);
caffe_cpu_axpby is Caffe's sscal then saxpy; caffe_cpu_scale is scopy then
sscal.  caffe_powx is glibc's powf per element, for squares and square
roots alike, and so is ours (npcaffe.kernels.sgd.powx): x*x and sqrt are
correctly rounded, powf is not, and about one input in 1,500 differs in the
last bit.

AdaGrad, RMSProp and AdaDelta compute what the DNS fork's solver.cpp
computes (it predates BVLC's solvers/ split): the same blobs (history_ per
param, AdaDelta's update histories after all the gradient histories, as its
.solverstate lists them; update_ and temp_ written in full before they are
read), the same calls in the same order, decay before and Net::Update after.
What made their runs part from the fork's (../shared/crosscheck/solver-adagrad:
every loss equal to iteration 7, then off; RMSProp and AdaDelta later) was
arithmetic below the formulas, where SGD, Nesterov and Adam do not notice it:
saxpy's tail and powf (above), and the softmax's sum of exponentials, which
the fork leaves to sgemv (npcaffe.kernels.softmax).  These rules divide each
weight's step by the root of its own gradient history, which makes them
amplifiers: a weight whose gradient nearly cancels its decay can take a step
of up to lr however small the remainder, so a last bit there can move it by
1e-3 of its size at once; and one example more or less in the gradient of a
weight with a small history moves it by up to lr (SGD: by lr times that
example's share).  A ReLU input near zero decides such an example: in that
bundle, ip2's unit 29 on the 11th image of batch 7, +3.4e-6 in the fork's run
and -9e-7 after seven iterations of other roundings.  With those three
mirrored, that run is the fork's to the bit (every printed loss, the weights
and history at both snapshots) when NumPy's OpenBLAS runs the fork's Haswell
kernels on one thread (OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1, as
`npcaffe crosscheck` runs solver bundles); other kernels or a threaded sgemm
round some products differently, and such a run may part from the fork's.
"""
import math

import numpy as np

from .. import glog
from ..errors import SolverError
from ..kernels.sgd import powx as powf_array
from ..kernels.sgd import saxpy_fma_end, sgd_momentum_update
from .lr_policy import learning_rate
from . import structured_sparsity
from .solver import Solver, register_solver

f32 = np.float32


# -- BLAS-level helpers, float32 in place ------------------------------------------
def axpy(alpha, x, y):
    """y <- alpha * x + y as OpenBLAS's saxpy: one rounding but in the last n % 32 elements,
    where a*x is rounded first; returns at once when alpha == 0."""
    alpha = f32(alpha)
    if alpha == 0:
        return
    end = saxpy_fma_end(y.size)
    y[:end] = np.float64(alpha) * x[:end] + y[:end]
    y[end:] = y[end:] + alpha * x[end:]


def scal(alpha, x):
    """x <- alpha * x (OpenBLAS sscal: alpha 1 leaves x alone, alpha 0 writes zeros)."""
    alpha = f32(alpha)
    if alpha == 1:
        return
    if alpha == 0:
        x[...] = 0
    else:
        x *= alpha


def axpby(alpha, x, beta, y):
    """y <- alpha * x + beta * y as Caffe's non-MKL cblas_saxpby: sscal(beta, y), then saxpy."""
    scal(beta, y)
    axpy(alpha, x, y)


def powx(x, p, out):
    """out <- x ** p with glibc's powf, as caffe_powx (flat float32 arrays; out may be x)."""
    powf_array(x, f32(p), out)


@register_solver("SGD")
class SGDSolver(Solver):
    """Stochastic gradient descent with momentum (Caffe's SGDSolver)."""

    history_sets = 1

    def pre_solve(self):
        self.structured_sparsity = structured_sparsity.from_solver(self.param, self.net, self.where)
        params = self.net.learnable_params
        self.history = [np.zeros(b.count, np.float32) for _ in range(self.history_sets) for b in params]
        self.update_buf = [np.zeros(b.count, np.float32) for b in params]
        self.temp = [np.zeros(b.count, np.float32) for b in params]

    def state_arrays(self):
        shapes = [b.shape for b in self.net.learnable_params] * self.history_sets
        return [h.reshape(shape) for h, shape in zip(self.history, shapes)]

    # pycaffe: SGDSolver.lr
    @property
    def lr(self):
        return self.get_learning_rate()

    def get_learning_rate(self):
        previous = self.current_step
        rate, self.current_step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.lr_policy == "multistep" and self.current_step != previous:
            glog.info(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}")
        return rate

    def apply_update(self):
        p = self.param
        rate = self.get_learning_rate()
        if p.display and self.iter % p.display == 0:
            glog.info(f"Iteration {self.iter}, lr = {glog.fmt(rate)}")
        self.clip_gradients()
        fused = self.fuses_update() and not self.net.debug_info  # debug_info prints each update value
        for param_id, blob in enumerate(self.net.learnable_params):
            self.normalize(param_id)
            if fused:
                local_decay = f32(p.weight_decay) * f32(self.net.params_weight_decay[param_id])
                diff, diff_is_zero = blob.diff_to_accumulate()  # zero: still a deferred clear's (a mask's)
                sgd_momentum_update(blob.flat_data, diff, self.history[param_id], local_decay,
                                    self.local_rate(param_id, rate), f32(p.momentum),
                                    step=self.net.updates_param(param_id), diff_is_zero=diff_is_zero)
            else:
                self.regularize(param_id)
                self.compute_update_value(param_id, rate)
        if fused:
            self.net.enforce_masks()
        else:
            self.net.update()
        self.iter += 1

    def fuses_update(self):
        """Whether this step may run as one fused kernel pass per blob (npcaffe.kernels.sgd):
        regularize, compute_update_value and the net's update (data -= diff where
        Net.updates_param allows) with the same roundings.  True for SGD's own rule with L2
        decay; a solver whose update rule differs (any override of regularize or
        compute_update_value) answers False, and may override this when it has a fused
        kernel of its own."""
        cls = type(self)
        return (self.param.regularization_type == "L2" and cls.regularize is SGDSolver.regularize
                and cls.compute_update_value is SGDSolver.compute_update_value
                and getattr(self, "structured_sparsity", None) is None)

    def clip_gradients(self):
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        params = self.net.learnable_params
        sumsq = f32(0)
        for blob in params:
            sumsq += f32(np.dot(blob.flat_diff, blob.flat_diff))
        l2norm = f32(np.sqrt(sumsq))
        if l2norm > clip:
            factor = f32(clip / l2norm)
            glog.info(f"Gradient clipping: scaling down gradients (L2 norm {glog.fmt(l2norm)} > "
                      f"{glog.fmt(clip)}) by scale factor {glog.fmt(factor)}")
            for blob in params:
                scal(factor, blob.flat_diff)

    def normalize(self, param_id):
        if self.param.iter_size == 1:
            return
        scal(f32(1) / f32(self.param.iter_size), self.net.learnable_params[param_id].flat_diff)

    def regularize(self, param_id):
        blob = self.net.learnable_params[param_id]
        local_decay = f32(self.param.weight_decay) * f32(self.net.params_weight_decay[param_id])
        if local_decay:
            if self.param.regularization_type == "L2":
                axpy(local_decay, blob.flat_data, blob.flat_diff)
            elif self.param.regularization_type == "L1":
                sign = self.temp[param_id]
                np.sign(blob.flat_data, out=sign)
                axpy(local_decay, sign, blob.flat_diff)
            else:
                raise SolverError(f"{self.where}: unknown regularization_type '{self.param.regularization_type}'")
        if self.structured_sparsity is not None:  # SSL's group lasso, slimming's L1 on gamma
            self.structured_sparsity.regularize(param_id, blob)

    def local_rate(self, param_id, rate):
        return f32(rate) * f32(self.net.params_lr[param_id])

    def compute_update_value(self, param_id, rate):
        diff = self.net.learnable_params[param_id].flat_diff
        history = self.history[param_id]
        axpby(self.local_rate(param_id, rate), diff, self.param.momentum, history)
        diff[...] = history


@register_solver("Nesterov")
class NesterovSolver(SGDSolver):
    """Nesterov's accelerated gradient: step back by the old momentum, then over-step."""

    def compute_update_value(self, param_id, rate):
        momentum = f32(self.param.momentum)
        diff = self.net.learnable_params[param_id].flat_diff
        history, update = self.history[param_id], self.update_buf[param_id]
        update[...] = history
        axpby(self.local_rate(param_id, rate), diff, momentum, history)
        axpby(f32(1) + momentum, history, -momentum, update)
        diff[...] = update


class _AdaptiveSolver(SGDSolver):
    def _scaled_by_rms(self, param_id, rate, history):
        """diff <- local_rate * diff / (sqrt(history) + delta), as upstream's powx/add_scalar/div/axpby."""
        diff = self.net.learnable_params[param_id].flat_diff
        update = self.update_buf[param_id]
        powx(history, 0.5, update)
        update += f32(self.param.delta)
        np.divide(diff, update, out=update)
        axpby(self.local_rate(param_id, rate), update, 0, diff)


@register_solver("AdaGrad")
class AdaGradSolver(_AdaptiveSolver):
    """AdaGrad (Duchi et al. 2011): per-weight rates from the summed squared gradients."""

    @classmethod
    def check_param(cls, param, where):
        if param.momentum != 0:
            raise SolverError(f"{where}: field 'momentum': momentum cannot be used with AdaGrad "
                              f"(got {param.momentum}); remove it")

    def compute_update_value(self, param_id, rate):
        diff = self.net.learnable_params[param_id].flat_diff
        history, update = self.history[param_id], self.update_buf[param_id]
        powx(diff, 2, update)
        np.add(update, history, out=history)
        self._scaled_by_rms(param_id, rate, history)


@register_solver("RMSProp")
class RMSPropSolver(_AdaptiveSolver):
    """RMSProp (Tieleman & Hinton): a running mean of squared gradients with decay rms_decay."""

    @classmethod
    def check_param(cls, param, where):
        if param.momentum != 0:
            raise SolverError(f"{where}: field 'momentum': momentum cannot be used with RMSProp "
                              f"(got {param.momentum}); remove it")
        if not 0 <= param.rms_decay < 1:
            raise SolverError(f"{where}: field 'rms_decay' must be in [0, 1), got {param.rms_decay}")

    def compute_update_value(self, param_id, rate):
        rms_decay = f32(self.param.rms_decay)
        diff = self.net.learnable_params[param_id].flat_diff
        history, update = self.history[param_id], self.update_buf[param_id]
        powx(diff, 2, update)
        axpby(f32(1) - rms_decay, update, rms_decay, history)
        self._scaled_by_rms(param_id, rate, history)


@register_solver("AdaDelta")
class AdaDeltaSolver(SGDSolver):
    """AdaDelta (Zeiler 2012); history holds the gradient averages, then the update averages."""

    history_sets = 2

    def compute_update_value(self, param_id, rate):
        momentum = f32(self.param.momentum)
        delta = f32(self.param.delta)
        n = len(self.net.learnable_params)
        diff = self.net.learnable_params[param_id].flat_diff
        grad_hist, update_hist = self.history[param_id], self.history[n + param_id]
        update, temp = self.update_buf[param_id], self.temp[param_id]
        powx(diff, 2, update)
        axpby(f32(1) - momentum, update, momentum, grad_hist)
        temp[...] = delta
        np.add(temp, update_hist, out=update)
        np.add(temp, grad_hist, out=temp)
        np.divide(update, temp, out=update)
        powx(update, 0.5, update)
        np.multiply(diff, update, out=diff)
        powx(diff, 2, update)
        axpby(f32(1) - momentum, update, momentum, update_hist)
        scal(self.local_rate(param_id, rate), diff)


@register_solver("Adam")
class AdamSolver(SGDSolver):
    """Adam (Kingma & Ba 2014): beta1 = momentum, beta2 = momentum2, eps = delta."""

    history_sets = 2

    def compute_update_value(self, param_id, rate):
        beta1, beta2 = f32(self.param.momentum), f32(self.param.momentum2)
        n = len(self.net.learnable_params)
        diff = self.net.learnable_params[param_id].flat_diff
        m, v, t = self.history[param_id], self.history[n + param_id], self.temp[param_id]
        step = self.iter + 1
        # pow(float, int) is promoted to double upstream; the quotient is rounded to float once.
        correction = f32(math.sqrt(1.0 - math.pow(float(beta2), step)) / (1.0 - math.pow(float(beta1), step)))
        axpby(f32(1) - beta1, diff, beta1, m)
        np.multiply(diff, diff, out=t)
        axpby(f32(1) - beta2, t, beta2, v)
        powx(v, 0.5, t)
        t += f32(self.param.delta)
        np.divide(m, t, out=t)
        diff[...] = t
        scal(self.local_rate(param_id, rate) * correction, diff)
