// The diagonal complex scan h_t = λ ⊙ h_{t∓1} + v_t on CPU, forward and backward, each in one pass over memory.
//
// Python side: rotrnn/ops/scan/fused_cpu.py (the operators and the build). Tensors are contiguous complex (B, L, C),
// read as interleaved (re, im) reals. Work is split over (batch, block of channels) tasks, each one sequential in
// time with its block's states in a small local array. Blocks are as wide as the row allows (all C channels when the
// batch alone gives every thread a task): each time step then reads and writes whole contiguous rows, a stream the
// hardware prefetcher follows, where narrow blocks stride through memory and wait on cache misses (measured 3-4x
// slower). The block width depends on the thread count only through the split, and every channel's recurrence is
// the same sequence of operations in any split, so results do not depend on the number of threads.
// Complex products are written out in real arithmetic: std::complex's operator* checks for NaN/inf (C99 Annex G)
// and does not vectorise.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t BLOCK = 256;  // the widest block of complex channels per task (its states: a few KB, in L1)
constexpr int64_t MIN_BLOCK = 16;

constexpr int64_t FLUSH = 64;  // λ-gradient terms summed in the input precision before joining the double total

// channels per task: whole rows when the batch gives each thread a task, else narrower blocks (at least MIN_BLOCK)
int64_t block_width(int64_t B, int64_t C) {
  const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
  const int64_t splits = std::max<int64_t>(1, (threads + B - 1) / B);
  const int64_t width = (C + splits - 1) / splits;
  return std::min(BLOCK, std::max(MIN_BLOCK, (width + MIN_BLOCK - 1) / MIN_BLOCK * MIN_BLOCK));
}

// Load a block row interleaved (re, im) into separate arrays, and store it back. A scan running down in time walks
// each row downwards too, so that the addresses it touches only decrease: a stream the prefetchers recognise, where
// rows read upwards one after the other downwards are not.
template <typename T>
inline void load(const T* in, T* ur, T* ui, int64_t n, bool down) {
  if (down) {
    for (int64_t j = n - 1; j >= 0; --j) {
      ui[j] = in[2 * j + 1];
      ur[j] = in[2 * j];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      ur[j] = in[2 * j];
      ui[j] = in[2 * j + 1];
    }
  }
}

template <typename T>
inline void store(const T* xr, const T* xi, T* out, int64_t n, bool down) {
  if (down) {
    for (int64_t j = n - 1; j >= 0; --j) {
      out[2 * j + 1] = xi[j];
      out[2 * j] = xr[j];
    }
  } else {
    for (int64_t j = 0; j < n; ++j) {
      out[2 * j] = xr[j];
      out[2 * j + 1] = xi[j];
    }
  }
}

// x = μ ⊙ x + u on a block of n complex numbers (μ = λ forward, conj(λ) for the adjoint: mi = -Im λ)
template <typename T>
inline void update(const T* mr, const T* mi, T* xr, T* xi, const T* ur, const T* ui, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const T r = mr[j] * xr[j] - mi[j] * xi[j] + ur[j];
    const T i = mr[j] * xi[j] + mi[j] * xr[j] + ui[j];
    xr[j] = r;
    xi[j] = i;
  }
}

template <typename T>
void scan_forward(const T* lam, const T* v, T* h, int64_t B, int64_t L, int64_t C, bool reverse) {
  const int64_t width = block_width(B, C), nblk = (C + width - 1) / width;
  at::parallel_for(0, B * nblk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblk, c0 = (task % nblk) * width, n = std::min(width, C - c0);
      T lr[BLOCK] = {}, li[BLOCK] = {}, xr[BLOCK] = {}, xi[BLOCK] = {}, ur[BLOCK] = {}, ui[BLOCK] = {};
      for (int64_t j = 0; j < n; ++j) {
        lr[j] = lam[2 * (c0 + j)];
        li[j] = lam[2 * (c0 + j) + 1];
      }
      for (int64_t s = 0; s < L; ++s) {
        const int64_t at = ((b * L + (reverse ? L - 1 - s : s)) * C + c0) * 2;
        load(v + at, ur, ui, n, reverse);
        update(lr, li, xr, xi, ur, ui, n);
        store(xr, xi, h + at, n, reverse);
      }
    }
  });
}

// The adjoint a runs opposite to the forward scan with conj(λ): a_t = conj(λ) a_{t±1} + g_t, and ∂/∂v = a.
// ∂/∂λ = Σ_{b,t} conj(h_prev_t) a_t, h_prev_t the state step t read (h_{t-1} forward, h_{t+1} reverse, zero at the
// boundary): FLUSH terms at a time in the input precision, those partial sums in double, then summed over the batch
// in a fixed order.
template <typename T>
void scan_backward(const T* lam, const T* h, const T* g, T* dv, double* dlam_parts, int64_t B, int64_t L, int64_t C,
                   bool reverse) {
  const int64_t width = block_width(B, C), nblk = (C + width - 1) / width;
  const bool down = !reverse;  // the adjoint of a forward scan runs down in time
  at::parallel_for(0, B * nblk, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / nblk, c0 = (task % nblk) * width, n = std::min(width, C - c0);
      T mr[BLOCK] = {}, mi[BLOCK] = {}, ar[BLOCK] = {}, ai[BLOCK] = {}, ur[BLOCK] = {}, ui[BLOCK] = {};
      T hr[BLOCK] = {}, hi[BLOCK] = {}, pr[BLOCK] = {}, pi[BLOCK] = {};
      double accr[BLOCK] = {}, acci[BLOCK] = {};
      for (int64_t j = 0; j < n; ++j) {
        mr[j] = lam[2 * (c0 + j)];
        mi[j] = -lam[2 * (c0 + j) + 1];  // conj(λ)
      }
      for (int64_t s = 0; s < L; ++s) {
        const int64_t t = down ? L - 1 - s : s;
        const int64_t at = ((b * L + t) * C + c0) * 2;
        load(g + at, ur, ui, n, down);
        update(mr, mi, ar, ai, ur, ui, n);
        store(ar, ai, dv + at, n, down);
        const int64_t tp = down ? t - 1 : t + 1;
        if (tp >= 0 && tp < L) {
          load(h + ((b * L + tp) * C + c0) * 2, hr, hi, n, down);
          for (int64_t j = 0; j < n; ++j) {
            pr[j] += hr[j] * ar[j] + hi[j] * ai[j];
            pi[j] += hr[j] * ai[j] - hi[j] * ar[j];
          }
        }
        if ((s + 1) % FLUSH == 0 || s + 1 == L) {
          for (int64_t j = 0; j < n; ++j) {
            accr[j] += static_cast<double>(pr[j]);
            acci[j] += static_cast<double>(pi[j]);
            pr[j] = 0;
            pi[j] = 0;
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
