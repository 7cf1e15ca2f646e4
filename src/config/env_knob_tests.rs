//! The environment knobs' parsing: defaults, accepted values, and errors
//! that name the variable, the value and what it accepts.

use super::*;

#[test]
fn switches_read_on_off_and_refuse_the_rest() {
    let of = |v: Option<&str>| switch_of("PADIC_X", v.map(Into::into));
    assert_eq!(of(None), Ok(false));
    for on in ["", "1", "true", "YES", " on "] {
        assert_eq!(of(Some(on)), Ok(true), "{on:?}");
    }
    for off in ["0", "false", "No", "off"] {
        assert_eq!(of(Some(off)), Ok(false), "{off:?}");
    }
    let e = of(Some("2")).unwrap_err();
    assert_eq!((e.variable, e.value.as_str()), ("PADIC_X", "2"));
    let msg = Error::from(e).to_string();
    assert!(
        msg.contains("PADIC_X=\"2\"") && msg.contains("0, false"),
        "{msg}"
    );
}

#[test]
fn gpu_batch_mb_defaults_and_bounds() {
    let of = |v: Option<&str>| gpu_batch_mb_of(v.map(Into::into));
    assert_eq!(of(None), Ok(256));
    assert_eq!(of(Some("1")), Ok(1));
    assert_eq!(of(Some(" 1024 ")), Ok(1024));
    for bad in ["0", "1025", "-3", "big", ""] {
        let e = of(Some(bad)).unwrap_err();
        assert_eq!((e.variable, e.value.as_str()), ("PADIC_GPU_BATCH_MB", bad));
        assert!(e.to_string().contains("1 to 1024"), "{e}");
    }
}

#[test]
fn the_cluster_connect_timeout_is_seconds_above_zero() {
    use std::time::Duration;
    let of = |v: Option<&str>| cluster_connect_timeout_of(v.map(Into::into));
    assert_eq!(of(None).unwrap(), Duration::from_secs(60));
    assert_eq!(of(Some(" 2.5 ")).unwrap(), Duration::from_millis(2500));
    assert_eq!(of(Some("0.001")).unwrap(), Duration::from_millis(1));
    // 1e20 seconds is more than a Duration holds: refused, not a panic.
    for bad in ["0", "-1", "inf", "NaN", "soon", "", "1e20"] {
        let e = of(Some(bad)).unwrap_err().to_string();
        assert!(
            e.contains("PADIC_CLUSTER_CONNECT_TIMEOUT_S") && e.contains("above 0"),
            "{bad:?}: {e}"
        );
    }
}
