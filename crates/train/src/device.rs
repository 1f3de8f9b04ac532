//! `--device cpu|cuda[:N]|metal|auto`.

use candle_core::Device;

use crate::error::{Result, TrainError};

/// Parses a device name. `auto` picks CUDA, then Metal, then the CPU, among those compiled in.
pub fn parse_device(name: &str) -> Result<Device> {
    let name = name.trim().to_ascii_lowercase();
    let unavailable = |what: &str, feature: &str, e: String| {
        TrainError::Run(format!(
            "device `{what}` is not available: {e}\n(build with `--features {feature}` on a machine with that GPU, or use --device cpu)"
        ))
    };
    match name.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
        "metal" => Device::new_metal(0).map_err(|e| unavailable("metal", "metal", e.to_string())),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = match s.strip_prefix("cuda:") {
                None => 0,
                Some(n) => n.parse::<usize>().map_err(|_| {
                    TrainError::Run(format!(
                        "bad device `{s}`: expected cuda or cuda:N with N a GPU number"
                    ))
                })?,
            };
            Device::new_cuda(ordinal).map_err(|e| unavailable(s, "cuda", e.to_string()))
        }
        other => Err(TrainError::Run(format!(
            "unknown device `{other}`: use cpu, cuda, cuda:N, metal or auto"
        ))),
    }
}

/// A short description for logs.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("auto").is_ok());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("unknown device `tpu`"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("cuda:N"), "{e}");
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(
                e.contains("--features cuda") && e.contains("--device cpu"),
                "{e}"
            );
        }
    }
}
