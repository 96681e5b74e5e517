//! systemd's D-Bus API as the cgroup manager uses it (org.freedesktop.systemd1.Manager on the
//! system bus): StartTransientUnit of a slice, waiting for its job as go-systemd does (JobRemoved,
//! result `done`), SetUnitProperties, StopUnit and ResetFailedUnit. [`Units`] is the seam the
//! container manager's tests script; [`SystemdDbus`] is the real client, every call under a
//! deadline, errors naming the call and the unit.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::future::BoxFuture;
use tracing::debug;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::CgroupError;
use super::systemd::{PropValue, Property};

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

/// How long a call and its job may take (libcontainer waits 30 s for a unit's job).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The unit operations of the systemd cgroup driver.
pub trait Units: Send + Sync {
    /// systemd's version (`252` of `252.30-1~deb12u2`), which gates some properties.
    fn version(&self) -> u32;
    /// Starts the transient unit `unit` with `props` and waits for its job; a unit that already
    /// exists is fine (libcontainer's ignoreExist, the kubelet's Apply(-1)).
    fn start<'a>(
        &'a self,
        unit: &'a str,
        props: &'a [Property],
    ) -> BoxFuture<'a, Result<(), CgroupError>>;
    /// Sets `props` on `unit` for this boot (runtime = true).
    fn set_properties<'a>(
        &'a self,
        unit: &'a str,
        props: &'a [Property],
    ) -> BoxFuture<'a, Result<(), CgroupError>>;
    /// Stops `unit` and waits for its job, then resets it if it failed; an unknown unit is fine.
    fn stop<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<(), CgroupError>>;
}

/// A connection to systemd on the system bus.
pub struct SystemdDbus {
    manager: zbus::Proxy<'static>,
    version: u32,
}

/// `252` of systemd's Version property (`252.30-1~deb12u2`, `v245.4-1.fc32`), as
/// systemdVersionAtoi; 0 when it has no leading number.
pub fn parse_version(v: &str) -> u32 {
    let v = v.trim_start_matches(['"', 'v']);
    let digits: String = v.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or(0)
}

/// StartTransientUnit's arguments: name, mode, properties, auxiliary units (none).
type StartArgs<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, Value<'a>)>,
    Vec<(&'a str, Vec<(&'a str, Value<'a>)>)>,
);

fn value(v: &PropValue) -> Value<'_> {
    match v {
        PropValue::Bool(b) => Value::from(*b),
        PropValue::U64(n) => Value::from(*n),
        PropValue::Str(s) => Value::from(s.as_str()),
        PropValue::Strs(s) => Value::from(s.iter().map(String::as_str).collect::<Vec<_>>()),
    }
}

fn body(props: &[Property]) -> Vec<(&str, Value<'_>)> {
    props.iter().map(|(n, v)| (*n, value(v))).collect()
}

/// The D-Bus error name of a failed call (`org.freedesktop.systemd1.UnitExists`).
fn error_name(e: &zbus::Error) -> Option<&str> {
    match e {
        zbus::Error::MethodError(name, _, _) => Some(name.as_str()),
        _ => None,
    }
}

impl SystemdDbus {
    /// Connects to the system bus and reads systemd's version.
    pub async fn connect() -> Result<SystemdDbus, CgroupError> {
        let err = |e: zbus::Error| CgroupError::Systemd {
            op: "connect",
            unit: String::new(),
            message: e.to_string(),
        };
        let conn = tokio::time::timeout(DEADLINE, zbus::Connection::system())
            .await
            .map_err(|_| CgroupError::SystemdTimeout {
                op: "connect",
                unit: String::new(),
                after: DEADLINE,
            })?
            .map_err(err)?;
        let manager = zbus::proxy::Builder::<zbus::Proxy>::new(&conn)
            .destination(DESTINATION)
            .and_then(|b| b.path(PATH))
            .and_then(|b| b.interface(MANAGER))
            .map_err(err)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        let version: String = manager.get_property("Version").await.map_err(err)?;
        Ok(SystemdDbus {
            manager,
            version: parse_version(&version),
        })
    }

    fn error(op: &'static str, unit: &str, e: zbus::Error) -> CgroupError {
        CgroupError::Systemd {
            op,
            unit: unit.to_string(),
            message: e.to_string(),
        }
    }

    /// Calls `method` with `body` about `unit`, and if it returns a job, waits for the job's
    /// JobRemoved (the match is added before the call, so the signal cannot be missed); the job's
    /// result, `done` when it worked. Everything within [`DEADLINE`].
    async fn call_job<B>(
        &self,
        op: &'static str,
        unit: &str,
        body: &B,
    ) -> Result<Option<String>, CgroupError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        let start = Instant::now();
        let work = async {
            let mut removed = self
                .manager
                .receive_signal_with_args("JobRemoved", &[(2, unit)])
                .await
                .map_err(|e| Self::error(op, unit, e))?;
            let reply = match self.manager.call_method(op, body).await {
                Ok(r) => r,
                Err(e)
                    if op == "StartTransientUnit"
                        && error_name(&e) == Some("org.freedesktop.systemd1.UnitExists") =>
                {
                    return Ok(None);
                }
                Err(e)
                    if op == "StopUnit"
                        && error_name(&e) == Some("org.freedesktop.systemd1.NoSuchUnit") =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(Self::error(op, unit, e)),
            };
            let job: OwnedObjectPath = reply
                .body()
                .deserialize()
                .map_err(|e| Self::error(op, unit, e))?;
            while let Some(msg) = removed.next().await {
                let Ok((_, path, _, result)) = msg
                    .body()
                    .deserialize::<(u32, OwnedObjectPath, String, String)>()
                else {
                    continue;
                };
                if path == job {
                    return Ok(Some(result));
                }
            }
            Err(CgroupError::Systemd {
                op,
                unit: unit.to_string(),
                message: "the bus connection closed before the job finished".into(),
            })
        };
        let r = tokio::time::timeout(DEADLINE, work).await.map_err(|_| {
            CgroupError::SystemdTimeout {
                op,
                unit: unit.to_string(),
                after: DEADLINE,
            }
        })?;
        debug!(systemd.op = op, systemd.unit = unit, elapsed_ms = start.elapsed().as_millis() as u64, result = ?r, "systemd call done");
        r
    }

    async fn reset_failed(&self, unit: &str) {
        let _ = tokio::time::timeout(
            DEADLINE,
            self.manager.call_method("ResetFailedUnit", &(unit,)),
        )
        .await;
    }
}

impl Units for SystemdDbus {
    fn version(&self) -> u32 {
        self.version
    }

    fn start<'a>(
        &'a self,
        unit: &'a str,
        props: &'a [Property],
    ) -> BoxFuture<'a, Result<(), CgroupError>> {
        Box::pin(async move {
            let args: StartArgs = (unit, "replace", body(props), Vec::new());
            match self.call_job("StartTransientUnit", unit, &args).await? {
                None => Ok(()),
                Some(r) if r == "done" => Ok(()),
                Some(r) => {
                    self.reset_failed(unit).await;
                    Err(CgroupError::Systemd {
                        op: "StartTransientUnit",
                        unit: unit.to_string(),
                        message: format!("the unit's job ended {r:?}"),
                    })
                }
            }
        })
    }

    fn set_properties<'a>(
        &'a self,
        unit: &'a str,
        props: &'a [Property],
    ) -> BoxFuture<'a, Result<(), CgroupError>> {
        Box::pin(async move {
            let op = "SetUnitProperties";
            let args = (unit, true, body(props));
            let call = self.manager.call_method(op, &args);
            tokio::time::timeout(DEADLINE, call)
                .await
                .map_err(|_| CgroupError::SystemdTimeout {
                    op,
                    unit: unit.to_string(),
                    after: DEADLINE,
                })?
                .map_err(|e| Self::error(op, unit, e))?;
            Ok(())
        })
    }

    fn stop<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<(), CgroupError>> {
        Box::pin(async move {
            let result = self.call_job("StopUnit", unit, &(unit, "replace")).await?;
            if let Some(r) = result.filter(|r| r != "done") {
                tracing::warn!(systemd.unit = unit, result = %r, "stopping the unit did not end done; continuing");
            }
            // A failed unit stays loaded until reset (libcontainer's stopUnit).
            self.reset_failed(unit).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_systemd_version_atoi() {
        for (v, n) in [
            ("252.30-1~deb12u2", 252),
            ("\"v245.4-1.fc32\"", 245),
            ("245", 245),
            ("v257", 257),
            ("unknown", 0),
        ] {
            assert_eq!(parse_version(v), n, "{v}");
        }
    }

    #[test]
    fn property_values_have_systemds_types() {
        use zbus::zvariant::Type;
        let props = vec![
            ("Description", PropValue::Str("d".into())),
            ("Wants", PropValue::Strs(vec!["kubepods.slice".into()])),
            ("CPUWeight", PropValue::U64(10)),
            ("DefaultDependencies", PropValue::Bool(false)),
        ];
        let sigs: Vec<String> = body(&props)
            .iter()
            .map(|(_, v)| v.value_signature().to_string())
            .collect();
        assert_eq!(sigs, ["s", "as", "t", "b"]);
        assert_eq!(StartArgs::SIGNATURE.to_string(), "(ssa(sv)a(sa(sv)))");
        assert_eq!(<(&str, bool)>::SIGNATURE.to_string(), "(sb)");
    }
}
