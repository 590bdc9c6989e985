//! libtorch's CUDA backend is not loaded until asked for, and once loaded it is the real one:
//! on a machine without a GPU, a CUDA tensor then fails for want of a driver, not for want of a
//! backend. One test in its own binary, so nothing else in the process loads the library first.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use blyan_tensorblock::{CUDA_BACKEND_LIBRARY, load_cuda_backend};
use tch::{Device, Kind, Tensor};

fn mapped() -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .contains(CUDA_BACKEND_LIBRARY)
}

#[test]
fn the_cuda_backend_loads_on_demand_only() {
    // libtorch itself works without it.
    let cpu = Tensor::ones([4], (Kind::Float, Device::Cpu));
    assert_eq!(cpu.sum(Kind::Float).double_value(&[]), 4.0);
    assert!(
        !mapped(),
        "{CUDA_BACKEND_LIBRARY} is mapped before it was asked for"
    );
    let without = Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0)));
    if let Err(error) = &without {
        let message = error.to_string();
        assert!(
            message.contains("'CUDA' backend"),
            "without the backend: {message}"
        );
    }
    assert!(
        without.is_err(),
        "a CUDA tensor was made without the CUDA backend"
    );

    load_cuda_backend().expect("the PyPI wheel's libtorch has CUDA");
    assert!(
        mapped(),
        "{CUDA_BACKEND_LIBRARY} is mapped after loading it"
    );
    load_cuda_backend().expect("loading twice is a no-op");
    match Tensor::f_zeros([1], (Kind::Float, Device::Cuda(0))) {
        Ok(tensor) => {
            assert!(tch::Cuda::is_available());
            assert_eq!(tensor.device(), Device::Cuda(0));
        }
        Err(error) => {
            let message = error.to_string();
            assert!(!tch::Cuda::is_available());
            // The backend answers: no driver or no device, never "no CUDA backend".
            assert!(
                !message.contains("'CUDA' backend")
                    && (message.contains("driver") || message.contains("no CUDA GPUs")),
                "with the backend loaded: {message}"
            );
        }
    }
}
