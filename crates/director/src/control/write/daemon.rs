//! The sync daemon's roles, as the write side starts and stops them: ipvsadm's
//! `--start-daemon`/`--stop-daemon`, and keepalived's `lvs_sync_daemon`, whose role
//! follows a VRRP instance (master while this host holds the instance's addresses, as
//! keepalived's VRRP switches IPVS's daemon at each transition).

use std::collections::BTreeSet;
use std::net::IpAddr;

use tracing::{info, warn};

use super::WriteSide;
use crate::control::dataplane::{Configure, Observe};
use crate::control::proto::{ControlError, DaemonRole, DaemonSettings};
use crate::sync::{Daemon, Role, SyncConfig, SyncError};

/// keepalived's `lvs_sync_daemon` in force: its settings, the VRRP instance and its
/// addresses (none: both roles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Following {
    pub settings: DaemonSettings,
    pub instance: Option<String>,
    pub vips: BTreeSet<IpAddr>,
}

impl From<SyncError> for ControlError {
    fn from(e: SyncError) -> ControlError {
        match e {
            SyncError::Running(r) => ControlError::DaemonRunning(r),
            SyncError::NotRunning(r) => ControlError::NoDaemon(r),
            e => ControlError::Daemon(e.to_string()),
        }
    }
}

/// The settings resolved on this host.
pub(super) fn resolve(s: &DaemonSettings) -> Result<SyncConfig, SyncError> {
    crate::sync::resolve(
        &s.iface,
        s.syncid,
        s.group,
        s.port,
        s.ttl,
        usize::from(s.maxlen),
    )
}

impl<D: Configure + Observe> WriteSide<D> {
    /// Gives the write side the sync daemon it starts and stops (none started yet).
    pub fn set_daemon(&mut self, d: Daemon) {
        self.daemon = Some(d);
        self.publish();
    }

    fn daemon_mut(&mut self) -> Result<&mut Daemon, ControlError> {
        self.daemon.as_mut().ok_or_else(|| {
            ControlError::Daemon("this director has no sync daemon (a test double)".into())
        })
    }

    /// ipvsadm's `--start-daemon ROLE`.
    pub(super) fn start_daemon(
        &mut self,
        role: DaemonRole,
        s: &DaemonSettings,
    ) -> Result<(), ControlError> {
        let config = resolve(s)?;
        self.daemon_mut()?.start(role, config)?;
        self.publish();
        Ok(())
    }

    /// ipvsadm's `--stop-daemon ROLE`.
    pub(super) fn stop_daemon(&mut self, role: DaemonRole) -> Result<(), ControlError> {
        self.daemon_mut()?.stop(role)?;
        self.publish();
        Ok(())
    }

    /// keepalived's `lvs_sync_daemon` (already checked by [`resolve`]): the same one
    /// changes nothing, another restarts the roles with its settings.
    pub(super) fn follow_daemon(&mut self, f: Following) {
        if self.following.as_ref() == Some(&f) {
            return;
        }
        if let Some(d) = self.daemon.as_mut() {
            for role in [Role::Master, Role::Backup] {
                let _ = d.stop(role);
            }
        }
        info!(
            "sync daemon on {}: {}",
            f.settings.iface,
            match &f.instance {
                Some(i) => format!("its role follows VRRP instance {i}"),
                None => "master and backup (no VRRP instance named)".into(),
            }
        );
        self.following = Some(f);
        self.sync_roles();
    }

    /// Starts and stops the roles of a daemon that follows a VRRP instance: master while
    /// this host holds one of the instance's addresses, else backup.
    pub(super) fn sync_roles(&mut self) {
        let Some(f) = &self.following else { return };
        let wanted: Vec<Role> = if f.vips.is_empty() {
            vec![Role::Master, Role::Backup]
        } else if f.vips.iter().any(|v| self.held.contains(v)) {
            vec![Role::Master]
        } else {
            vec![Role::Backup]
        };
        let config = match resolve(&f.settings) {
            Ok(c) => c,
            Err(e) => {
                warn!("sync daemon: {e}");
                return;
            }
        };
        let follows = f
            .instance
            .as_ref()
            .map_or(String::new(), |i| format!(" (following VRRP instance {i})"));
        let Some(d) = self.daemon.as_mut() else {
            return;
        };
        let mut said = Vec::new();
        // Stop first: a director that becomes master stops taking the old master's.
        for role in [Role::Master, Role::Backup] {
            if !wanted.contains(&role) && d.runs(role) && d.stop(role).is_ok() {
                said.push(format!("{role} stopped"));
            }
        }
        for &role in &wanted {
            if !d.runs(role) {
                match d.start(role, config.clone()) {
                    Ok(()) => said.push(format!("{role} started")),
                    Err(e) => warn!("sync daemon: {e}; tried again at the next change"),
                }
            }
        }
        if !said.is_empty() {
            self.events.push(
                crate::events::Kind::Sync,
                format!(
                    "sync daemon on {}: {}{follows}",
                    config.iface,
                    said.join(", ")
                ),
            );
            self.publish();
        }
    }

    /// The daemon as the read side shows it.
    pub(super) fn sync_info(&self) -> Option<crate::control::view::SyncInfo> {
        let d = self.daemon.as_ref()?;
        Some(crate::control::view::SyncInfo {
            roles: d.running(),
            follows: self.following.as_ref().and_then(|f| f.instance.clone()),
            stats: std::sync::Arc::clone(&d.stats),
        })
    }
}
