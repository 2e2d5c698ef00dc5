//! eKYC submission: the provider's outcome recorded, and one identity bound to one wallet
//! (`kyc::bind_identity`): another wallet proving an identity already bound, or the wallet
//! proving someone else, is held as `review` and sent to the review inbox.

use kinko_store::sql::Tx;

use super::{IdentityError, IdentityService, tell_user};
use crate::kyc::{self, KycOutcome, KycRecord};
use crate::session::SessionInfo;

impl IdentityService {
    /// Submits an eKYC result reference to the provider and records the outcome.
    pub fn submit_kyc(
        &self,
        session: &SessionInfo,
        document_reference: &str,
    ) -> Result<KycRecord, IdentityError> {
        let reference = document_reference.trim();
        if reference.is_empty() || reference.len() > 200 {
            return Err(IdentityError::NotFound);
        }
        let outcome = self
            .kyc
            .verify(reference)
            .map_err(|_| IdentityError::KycUnavailable)?;
        let now_ms = self.now_ms();
        let identity_key = match &outcome {
            KycOutcome::Verified(identity) => Some(kyc::identity_key(self.secret_box(), identity)),
            _ => None,
        };
        self.db.transaction(|tx: &mut dyn Tx| {
            let user_id = session.user_id;
            let held_for = match &identity_key {
                None => None,
                Some(key) => match kyc::bind_identity(tx, now_ms, user_id, key)? {
                    kyc::Binding::Bound | kyc::Binding::Same => None,
                    kyc::Binding::ChangedIdentity => Some("identity_changed"),
                    kyc::Binding::HeldByAnother(owner) => {
                        tell_user(
                            tx,
                            now_ms,
                            owner,
                            "kyc_identity_elsewhere",
                            "あなたの本人確認情報で別のウォレットが本人確認を試みました / Someone used your identity for another wallet",
                            "あなたの本人確認情報（氏名・生年月日）で、別のウォレットが本人確認を試みました。確認のため保留しています。心当たりがない場合はご連絡ください。\n\nAnother wallet submitted an identity check with your name and birth date. We have held it for review. If this was not you, contact us.",
                        )?;
                        Some("identity_in_use")
                    }
                },
            };
            let record = kyc::record_outcome(
                tx,
                now_ms,
                user_id,
                self.kyc.name(),
                reference,
                &outcome,
                held_for,
            )?;
            // Who stands behind a wallet changes only after a person has looked.
            if let (Some(reason), Some(reviews)) = (held_for, &self.reviews) {
                reviews.open_review(
                    tx,
                    user_id,
                    &format!("kyc_record:{}", record.id),
                    &format!("eKYC held for review: {reason}"),
                    now_ms,
                )?;
            }
            Ok(record)
        })
    }
}
