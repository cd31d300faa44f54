// GPU conversion reference; see fp8_convert_reference.h. One launch per call, device buffers owned
// here and freed before returning.
#include "kernels/cuda/fp8_convert_reference.h"

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

namespace dsv3::kernels::cuda_reference {
namespace {

__global__ void EncodeKernel(uint32_t base, uint32_t n, int kind, uint8_t* out8, uint16_t* out16) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float x = __uint_as_float(base + i);
    if (kind == 0) {
      out8[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3);
    } else if (kind == 1) {
      out8[i] = __nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E5M2);
    } else {
      out16[i] = __bfloat16_as_ushort(__float2bfloat16_rn(x));
    }
  }
}

__global__ void DecodeKernel(int kind, float* out) {
  const int i = threadIdx.x + blockIdx.x * blockDim.x;
  if (kind == 2) {
    if (i < 65536) out[i] = __bfloat162float(__ushort_as_bfloat16(static_cast<uint16_t>(i)));
  } else if (i < 256) {
    const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(i),
                                                 kind == 0 ? __NV_E4M3 : __NV_E5M2);
    out[i] = __half2float(__half(h));
  }
}

std::string Error(const char* what, cudaError_t e) {
  return std::string(what) + ": " + cudaGetErrorString(e);
}

}  // namespace

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

std::string EncodeRange(uint32_t base, uint32_t n, Kind kind, uint8_t* out8, uint16_t* out16) {
  const int k = static_cast<int>(kind);
  const size_t bytes = kind == Kind::kBf16 ? n * sizeof(uint16_t) : n;
  void* d = nullptr;
  if (cudaError_t e = cudaMalloc(&d, bytes); e != cudaSuccess) return Error("cudaMalloc", e);
  EncodeKernel<<<4096, 256>>>(base, n, k, static_cast<uint8_t*>(d), static_cast<uint16_t*>(d));
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) {
    e = cudaMemcpy(kind == Kind::kBf16 ? static_cast<void*>(out16) : static_cast<void*>(out8), d,
                   bytes, cudaMemcpyDeviceToHost);
  }
  cudaFree(d);
  return e == cudaSuccess ? "" : Error("encode", e);
}

std::string DecodeAll(Kind kind, float* out) {
  const int n = kind == Kind::kBf16 ? 65536 : 256;
  float* d = nullptr;
  if (cudaError_t e = cudaMalloc(&d, n * sizeof(float)); e != cudaSuccess) {
    return Error("cudaMalloc", e);
  }
  DecodeKernel<<<(n + 255) / 256, 256>>>(static_cast<int>(kind), d);
  cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaMemcpy(out, d, n * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(d);
  return e == cudaSuccess ? "" : Error("decode", e);
}

}  // namespace dsv3::kernels::cuda_reference
