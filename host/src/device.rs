//! Where models run: the `--device` / [`crate::HostBuilder::device`] setting, turned into
//! the one candle [`Device`] every family of a host loads onto, and the float type a
//! family computes in on it.
//!
//! Only the model's tensors live on the device: tokenisation, image decoding and
//! resizing stay on the CPU and hand the families plain tensors they move over.
//!
//! Every family computes in f32 on every device. Half precision is not used on the GPU
//! because candle 0.11's BERT (and the encoders built like it) builds its attention
//! mask as `(1 - mask) * f32::MIN` in the model's dtype: `f32::MIN` becomes -inf in f16
//! and bf16, and `0 * -inf` is NaN, so every vector would be NaN. GGUF models keep
//! their quantized weights on the device and run candle's CUDA quantized matmuls.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;

use crate::error::{LanternError, LanternResult};

/// The device a host was asked to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU (the default: it is always there and needs no driver).
    #[default]
    Cpu,
    /// CUDA device N (`cuda` is `cuda:0`); an error when it cannot be opened.
    Cuda(usize),
    /// The first CUDA device when this build has the `cuda` feature and one answers,
    /// otherwise the CPU.
    Auto,
}

impl FromStr for DeviceChoice {
    type Err = LanternError;

    fn from_str(text: &str) -> LanternResult<Self> {
        let invalid = || LanternError::InvalidInput(format!("device `{text}`: expected cpu, cuda, cuda:N or auto"));
        match text.trim().to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceChoice::Cpu),
            "auto" => Ok(DeviceChoice::Auto),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(ordinal) => ordinal.parse().map(DeviceChoice::Cuda).map_err(|_| invalid()),
                None => Err(invalid()),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(ordinal) => write!(f, "cuda:{ordinal}"),
            DeviceChoice::Auto => f.write_str("auto"),
        }
    }
}

/// Whether this build can run models on CUDA devices (the `cuda` cargo feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// The choice in `LANTERN_DEVICE` (the CLI's `--device` reads the same variable), or
    /// the CPU when it is unset; benchmarks and embedders use it to pick a device without flags.
    pub fn from_env() -> LanternResult<Self> {
        match std::env::var("LANTERN_DEVICE") {
            Ok(text) => text.parse(),
            Err(_) => Ok(DeviceChoice::Cpu),
        }
    }

    /// Opens the device. `Auto` never fails: it falls back to the CPU and says why in the
    /// log, once, here (a host resolves its device once, when it is built).
    pub fn resolve(self) -> LanternResult<Device> {
        let device = match self {
            DeviceChoice::Cpu => Device::Cpu,
            DeviceChoice::Cuda(ordinal) => open_cuda(ordinal)?,
            DeviceChoice::Auto => match open_cuda(0) {
                Ok(device) => device,
                Err(why) => {
                    tracing::info!("device auto: using the CPU ({why})");
                    return Ok(Device::Cpu);
                }
            },
        };
        tracing::info!("device {self}: models run on {}", describe(&device));
        Ok(device)
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(ordinal: usize) -> LanternResult<Device> {
    // cudarc reports a missing driver or device as an error, but a driver library that
    // is present and broken can panic inside it: both become the same typed error.
    match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
        Ok(Ok(device)) => Ok(device),
        Ok(Err(error)) => Err(LanternError::ModelNotSupported(format!("CUDA device {ordinal} cannot be opened: {error}"))),
        Err(_) => Err(LanternError::ModelNotSupported(format!("CUDA device {ordinal} cannot be opened: the CUDA driver panicked"))),
    }
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(ordinal: usize) -> LanternResult<Device> {
    Err(LanternError::ModelNotSupported(format!(
        "device cuda:{ordinal} needs a build with the `cuda` feature (cargo build --release --features cuda, \
         or scripts/build-cuda.sh); this build runs models on the CPU only"
    )))
}

/// "cpu" or "cuda:N", for logs and errors.
pub fn describe(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// A load or inference error on a non-CPU device that comes from a missing kernel (an
/// op or dtype candle implements only on the CPU), retold as `model-not-supported`
/// naming the device and the cause, so a plugin learns the model cannot run there
/// instead of an opaque inference failure. Other errors pass unchanged.
pub fn unsupported_on_device(device: &Device, error: LanternError) -> LanternError {
    if device.is_cpu() {
        return error;
    }
    match &error {
        LanternError::InferenceFailed(message) if is_missing_kernel(message) => {
            LanternError::ModelNotSupported(format!("this model cannot run on {}: {message}", describe(device)))
        }
        _ => error,
    }
}

/// candle's wording for an op or dtype a backend lacks ("no cuda implementation for
/// …", "unsupported dtype …", "… is not implemented …").
fn is_missing_kernel(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    // "uspport" is candle 0.11's own spelling in its CUDA Map1 helpers.
    ["no cuda implementation", "not implemented", "unsupported dtype", "not supported on cuda", "does not uspport this dtype"]
        .iter()
        .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        assert_eq!("cpu".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("CPU".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cpu);
        assert_eq!("auto".parse::<DeviceChoice>().unwrap(), DeviceChoice::Auto);
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(3));
        for choice in [DeviceChoice::Cpu, DeviceChoice::Auto, DeviceChoice::Cuda(2)] {
            assert_eq!(choice.to_string().parse::<DeviceChoice>().unwrap(), choice);
        }
    }

    #[test]
    fn rejects_other_spellings() {
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "metal", "", "cuda0"] {
            match bad.parse::<DeviceChoice>() {
                Err(LanternError::InvalidInput(message)) => assert!(message.contains("cpu, cuda, cuda:N or auto"), "{message}"),
                other => panic!("{bad:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn cpu_is_always_there() {
        assert!(DeviceChoice::Cpu.resolve().unwrap().is_cpu());
    }

    /// Without the feature, auto is the CPU and an explicit cuda request names the feature.
    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_feature_auto_is_the_cpu_and_cuda_names_the_feature() {
        assert!(DeviceChoice::Auto.resolve().unwrap().is_cpu());
        for choice in [DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)] {
            match choice.resolve() {
                Err(LanternError::ModelNotSupported(message)) => {
                    assert!(message.contains("`cuda` feature"), "{message}");
                    assert!(message.contains(&choice.to_string()), "{message}");
                }
                other => panic!("{choice} resolved to {other:?}"),
            }
        }
    }

    /// With the feature, auto is a CUDA device when one answers and the CPU otherwise;
    /// either way it resolves (this runs on machines with and without a GPU).
    #[cfg(feature = "cuda")]
    #[test]
    fn with_the_feature_auto_follows_the_driver() {
        let device = DeviceChoice::Auto.resolve().unwrap();
        assert_eq!(device.is_cuda(), DeviceChoice::Cuda(0).resolve().is_ok());
    }

    #[test]
    fn missing_kernels_become_unsupported_only_on_a_device() {
        let error = LanternError::InferenceFailed("forward: no cuda implementation for conv-transpose1d".into());
        assert_eq!(unsupported_on_device(&Device::Cpu, error.clone()), error);
        let other = LanternError::InferenceFailed("shape mismatch in matmul".into());
        assert_eq!(unsupported_on_device(&Device::Cpu, other.clone()), other);
        assert!(is_missing_kernel("no cuda implementation for conv-transpose1d"));
        assert!(is_missing_kernel("unsupported dtype BF16 for op matmul"));
        assert!(!is_missing_kernel("shape mismatch in matmul"));
    }
}
