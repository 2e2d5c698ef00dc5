//! A holder's own sessions and devices: listed, and ended one by one (audited).

use kinko_audit::Actor;
use kinko_store::sql::Tx;

use super::{IdentityError, IdentityService, audit};
use crate::session::{self, SessionInfo};

impl IdentityService {
    pub fn list_sessions(
        &self,
        session: &SessionInfo,
    ) -> Result<Vec<session::SessionSummary>, IdentityError> {
        let now_ms = self.now_ms();
        Ok(self
            .db
            .transaction(|tx: &mut dyn Tx| session::list_sessions(tx, now_ms, session.user_id))?)
    }

    pub fn revoke_session(
        &self,
        session: &SessionInfo,
        target: session::SessionId,
    ) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            session::revoke(tx, now_ms, session.user_id, target)?;
            audit(
                tx,
                now_ms,
                Actor::User(session.user_id),
                "session.revoked",
                session.user_id,
                serde_json::json!({}),
            )
        })
    }

    pub fn list_devices(
        &self,
        session: &SessionInfo,
    ) -> Result<Vec<session::DeviceSummary>, IdentityError> {
        Ok(self
            .db
            .transaction(|tx: &mut dyn Tx| session::list_devices(tx, session.user_id))?)
    }

    pub fn revoke_device(
        &self,
        session: &SessionInfo,
        device: session::DeviceId,
    ) -> Result<(), IdentityError> {
        let now_ms = self.now_ms();
        self.db.transaction(|tx: &mut dyn Tx| {
            session::revoke_device(tx, now_ms, session.user_id, device)?;
            audit(
                tx,
                now_ms,
                Actor::User(session.user_id),
                "device.revoked",
                session.user_id,
                serde_json::json!({}),
            )
        })
    }
}
