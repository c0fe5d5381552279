// The diagonal complex scan h_t = λ ⊙ h_{t∓1} + v_t on CPU, forward and backward, each in one pass over memory.
//
// Python side: rotrnn/ops/scan/fused_cpu.py (the autograd Function and the build). Tensors are contiguous complex
// (B, L, C), read as interleaved (re, im) reals. Work is split over (batch, block of channels) tasks, each one
// sequential in time with its states in registers, so the result does not depend on the number of threads.
// Complex products are written out in real arithmetic: std::complex's operator* checks for NaN/inf (C99 Annex G)
// and does not vectorise.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t BLOCK = 16;  // complex channels per task: the states of one task fit in registers

template <typename T>
void scan_forward(const T* lam, const T* v, T* h, int64_t B, int64_t L, int64_t C, bool reverse) {
  const int64_t nblk = (C + BLOCK - 1) / BLOCK;
  at::parallel_for(0, B * nblk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblk, c0 = (task % nblk) * BLOCK, n = std::min(BLOCK, C - c0);
      T lr[BLOCK], li[BLOCK], sr[BLOCK] = {}, si[BLOCK] = {};
      for (int64_t j = 0; j < n; ++j) {
        lr[j] = lam[2 * (c0 + j)];
        li[j] = lam[2 * (c0 + j) + 1];
      }
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = reverse ? L - 1 - s : s;
        const int64_t at = ((b * L + t) * C + c0) * 2;
        const T* vt = v + at;
        T* ht = h + at;
        for (int64_t j = 0; j < n; ++j) {
          const T r = lr[j] * sr[j] - li[j] * si[j] + vt[2 * j];
          const T i = lr[j] * si[j] + li[j] * sr[j] + vt[2 * j + 1];
          sr[j] = r;
          si[j] = i;
          ht[2 * j] = r;
          ht[2 * j + 1] = i;
        }
      }
    }
  });
}

// The adjoint a runs opposite to the forward scan with conj(λ): a_t = conj(λ) a_{t±1} + g_t, and ∂/∂v = a.
// ∂/∂λ = Σ_{b,t} conj(h_prev_t) a_t, h_prev_t the state step t read (h_{t-1} forward, h_{t+1} reverse, zero at the
// boundary): accumulated per task in double, then summed over the batch in a fixed order.
template <typename T>
void scan_backward(const T* lam, const T* h, const T* g, T* dv, double* dlam_parts, int64_t B, int64_t L, int64_t C,
                   bool reverse) {
  const int64_t nblk = (C + BLOCK - 1) / BLOCK;
  at::parallel_for(0, B * nblk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblk, c0 = (task % nblk) * BLOCK, n = std::min(BLOCK, C - c0);
      T lr[BLOCK], li[BLOCK], ar[BLOCK] = {}, ai[BLOCK] = {};
      double accr[BLOCK] = {}, acci[BLOCK] = {};
      for (int64_t j = 0; j < n; ++j) {
        lr[j] = lam[2 * (c0 + j)];
        li[j] = lam[2 * (c0 + j) + 1];
      }
      const int64_t step = reverse ? -1 : 1;  // the offset from t to the state step t read
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = reverse ? s : L - 1 - s;
        const int64_t at = ((b * L + t) * C + c0) * 2;
        const T* gt = g + at;
        T* dvt = dv + at;
        const int64_t tp = t - step;
        const bool has_prev = tp >= 0 && tp < L;
        const T* hp = h + ((b * L + (has_prev ? tp : t)) * C + c0) * 2;
        for (int64_t j = 0; j < n; ++j) {
          const T r = lr[j] * ar[j] + li[j] * ai[j] + gt[2 * j];
          const T i = lr[j] * ai[j] - li[j] * ar[j] + gt[2 * j + 1];
          ar[j] = r;
          ai[j] = i;
          dvt[2 * j] = r;
          dvt[2 * j + 1] = i;
        }
        if (has_prev) {
          for (int64_t j = 0; j < n; ++j) {
            const T hr = hp[2 * j], hi = hp[2 * j + 1];
            accr[j] += static_cast<double>(hr * ar[j] + hi * ai[j]);
            acci[j] += static_cast<double>(hr * ai[j] - hi * ar[j]);
          }
        }
      }
      double* out = dlam_parts + (b * C + c0) * 2;
      for (int64_t j = 0; j < n; ++j) {
        out[2 * j] = accr[j];
        out[2 * j + 1] = acci[j];
      }
    }
  });
}

void check(const at::Tensor& lam, const at::Tensor& v, const char* name) {
  TORCH_CHECK(lam.device().is_cpu() && v.device().is_cpu(), "fused_cpu scan: CPU tensors only");
  TORCH_CHECK(lam.scalar_type() == v.scalar_type(), "fused_cpu scan: lam and ", name, " must share a dtype");
  TORCH_CHECK(v.scalar_type() == at::kComplexFloat || v.scalar_type() == at::kComplexDouble,
              "fused_cpu scan: complex64 or complex128 only, got ", v.scalar_type());
  TORCH_CHECK(v.dim() == 3 && lam.dim() == 1 && lam.size(0) == v.size(2), "fused_cpu scan: lam (C,), ", name,
              " (B, L, C)");
}

at::Tensor forward(const at::Tensor& lam_in, const at::Tensor& v_in, bool reverse) {
  check(lam_in, v_in, "v");
  const auto lam = at::view_as_real(lam_in.resolve_conj().contiguous());
  const auto v = at::view_as_real(v_in.resolve_conj().contiguous());
  auto h = at::empty_like(v);
  const int64_t B = v.size(0), L = v.size(1), C = v.size(2);
  if (v.scalar_type() == at::kFloat) {
    scan_forward<float>(lam.data_ptr<float>(), v.data_ptr<float>(), h.data_ptr<float>(), B, L, C, reverse);
  } else {
    scan_forward<double>(lam.data_ptr<double>(), v.data_ptr<double>(), h.data_ptr<double>(), B, L, C, reverse);
  }
  return at::view_as_complex(h);
}

std::vector<at::Tensor> backward(const at::Tensor& lam_in, const at::Tensor& h_in, const at::Tensor& g_in,
                                 bool reverse) {
  check(lam_in, h_in, "h");
  check(lam_in, g_in, "g");
  TORCH_CHECK(h_in.sizes() == g_in.sizes(), "fused_cpu scan: h and g must have one shape");
  const auto lam = at::view_as_real(lam_in.resolve_conj().contiguous());
  const auto h = at::view_as_real(h_in.resolve_conj().contiguous());
  const auto g = at::view_as_real(g_in.resolve_conj().contiguous());
  auto dv = at::empty_like(g);
  const int64_t B = g.size(0), L = g.size(1), C = g.size(2);
  auto parts = at::zeros({B, C, 2}, g.options().dtype(at::kDouble));
  if (g.scalar_type() == at::kFloat) {
    scan_backward<float>(lam.data_ptr<float>(), h.data_ptr<float>(), g.data_ptr<float>(), dv.data_ptr<float>(),
                         parts.data_ptr<double>(), B, L, C, reverse);
  } else {
    scan_backward<double>(lam.data_ptr<double>(), h.data_ptr<double>(), g.data_ptr<double>(), dv.data_ptr<double>(),
                          parts.data_ptr<double>(), B, L, C, reverse);
  }
  auto dlam = at::view_as_complex(parts.sum(0).to(lam.scalar_type()).contiguous());
  return {at::view_as_complex(dv), dlam};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "h = scan(lam, v)", py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, "(dv, dlam) from (lam, h, g)", py::call_guard<py::gil_scoped_release>());
}
