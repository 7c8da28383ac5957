// CUDA kernels candle lacks for DDColor (built by build.rs with nvcc when the `cuda` feature is
// on, loaded by src/kernels/depthwise.rs). Each computes in f32 whatever the storage type.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16(v);
}
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half(v); }

// Depthwise k x k convolution, zero padding k/2, stride 1, NHWC: x [n, h, w, c], weight
// [k, k, c], bias [c] -> y [n, h, w, c]. One thread per output value, channels fastest, so a
// warp reads 32 consecutive channels of each tap (coalesced); one launch per layer, where
// candle's grouped conv2d launches one convolution per channel.
template <typename T>
__device__ void depthwise_nhwc(const T *__restrict__ x, const T *__restrict__ wt,
                               const T *__restrict__ bias, T *__restrict__ y, int n, int h,
                               int w, int c, int k) {
    const int64_t total = (int64_t)n * h * w * c;
    const int pad = k / 2;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)blockDim.x * gridDim.x) {
        const int ch = (int)(i % c);
        int64_t t = i / c;
        const int ox = (int)(t % w);
        t /= w;
        const int oy = (int)(t % h);
        const int64_t img = t / h;
        float acc = to_f32(bias[ch]);
        for (int ky = 0; ky < k; ++ky) {
            const int iy = oy + ky - pad;
            if (iy < 0 || iy >= h) continue;
            const T *row = x + ((img * h + iy) * w) * c + ch;
            const T *tap = wt + (int64_t)ky * k * c + ch;
            for (int kx = 0; kx < k; ++kx) {
                const int ix = ox + kx - pad;
                if (ix < 0 || ix >= w) continue;
                acc += to_f32(row[(int64_t)ix * c]) * to_f32(tap[(int64_t)kx * c]);
            }
        }
        y[i] = from_f32<T>(acc);
    }
}

#define DEPTHWISE(NAME, T)                                                                 \
    extern "C" __global__ void NAME(const T *x, const T *wt, const T *bias, T *y, int n,   \
                                    int h, int w, int c, int k) {                          \
        depthwise_nhwc<T>(x, wt, bias, y, n, h, w, c, k);                                  \
    }

DEPTHWISE(depthwise_nhwc_f32, float)
DEPTHWISE(depthwise_nhwc_bf16, __nv_bfloat16)
DEPTHWISE(depthwise_nhwc_f16, __half)
