// A tensor over borrowed bytes whose storage owns a reference to those bytes.
//
// `at::from_blob` with a deleter makes a tensor whose storage calls the deleter when libtorch
// frees it: after the last tensor, view or shallow clone that shares the storage is gone, on
// whatever thread drops it last. The Rust side passes `ctx` (a boxed `Arc` of the payload's
// owner) and `release` (drops that box). This file guarantees `release(ctx)` runs exactly once
// on every path, success or failure:
// - `keep` takes ownership of `ctx` first; if even that throws, std::shared_ptr's constructor
//   calls `release(ctx)` itself ([util.smartptr.shared.const]);
// - the deleter lambda holds a copy of `keep`; libtorch keeps the lambda inside the storage's
//   DataPtr and destroys it with the storage, which drops the last copy and calls `release`;
// - if anything throws before the tensor exists, every copy of `keep` is destroyed while the
//   exception unwinds, so `release` runs before this function returns null.
// So the caller must never touch `ctx` again after the call.
#include <ATen/core/Tensor.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>

namespace {

// Codes of `blyan_tensorblock::Dtype` on disk (docs/tensorblock-format.md).
bool scalar_type_of(int32_t dtype, at::ScalarType* out) {
  switch (dtype) {
    case 1: *out = at::kFloat; return true;
    case 2: *out = at::kHalf; return true;
    case 3: *out = at::kBFloat16; return true;
    case 4: *out = at::kChar; return true;
    default: return false;
  }
}

void write_error(char* error, size_t error_bytes, const char* message) {
  if (error == nullptr || error_bytes == 0) return;
  std::strncpy(error, message, error_bytes - 1);
  error[error_bytes - 1] = '\0';
}

}  // namespace

extern "C" {

// Returns a heap `at::Tensor*` (tch frees it with `delete`), or null with a message in `error`.
void* blyan_tensor_from_blob_with_deleter(void* data, const int64_t* sizes, const int64_t* strides,
                                          int64_t rank, int32_t dtype,
                                          void (*release)(void*), void* ctx, char* error,
                                          size_t error_bytes) {
  try {
    std::shared_ptr<void> keep(ctx, release);
    at::ScalarType scalar_type;
    if (!scalar_type_of(dtype, &scalar_type)) {
      write_error(error, error_bytes, "unknown dtype code");
      return nullptr;
    }
    auto options = at::TensorOptions().dtype(scalar_type).device(at::kCPU).requires_grad(false);
    at::Tensor tensor = at::from_blob(data, at::IntArrayRef(sizes, static_cast<size_t>(rank)),
                                      at::IntArrayRef(strides, static_cast<size_t>(rank)),
                                      [keep](void*) {}, options);
    return new at::Tensor(std::move(tensor));
  } catch (const std::exception& e) {
    write_error(error, error_bytes, e.what());
    return nullptr;
  } catch (...) {
    write_error(error, error_bytes, "unknown C++ exception");
    return nullptr;
  }
}

}  // extern "C"
