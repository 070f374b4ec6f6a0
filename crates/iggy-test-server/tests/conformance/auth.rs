//! Signing in: username and password, wrong credentials, anonymous clients, and
//! personal access tokens.

use iggy::prelude::*;
use iggy_test_server::{target, unique};

use crate::support::{client, connect, id, within};

#[tokio::test]
async fn password_sign_in_and_wrong_credentials() {
    let target = target().await;
    within(async {
        let client = client(&target).await;
        client.ping().await.unwrap();
        let me = client.get_me().await.unwrap();
        assert!(me.user_id.is_some());

        let wrong = AutoLogin::Enabled(Credentials::UsernamePassword(
            "iggy".to_owned(),
            "not-the-password".into(),
        ));
        let error = connect(&target.address, wrong)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(error, IggyError::InvalidCredentials),
            "expected InvalidCredentials, got {error:?}"
        );

        let anonymous = connect(&target.address, AutoLogin::Disabled).await.unwrap();
        let error = anonymous.get_streams().await.unwrap_err();
        assert!(matches!(error, IggyError::Unauthenticated), "{error:?}");
    })
    .await;
}

#[tokio::test]
async fn token_sign_in() {
    let target = target().await;
    within(async {
        let admin = client(&target).await;
        let token = admin
            .create_personal_access_token(
                &unique("conf-pat"),
                PersonalAccessTokenExpiry::NeverExpire,
            )
            .await
            .unwrap()
            .token;
        let login = AutoLogin::Enabled(Credentials::PersonalAccessToken(token.clone().into()));
        let by_token = connect(&target.address, login).await.unwrap();
        by_token.ping().await.unwrap();
        let stream = unique("conf-pat-stream");
        by_token.create_stream(&stream).await.unwrap();
        assert!(by_token.get_stream(&id(&stream)).await.unwrap().is_some());

        let plain = connect(&target.address, AutoLogin::Disabled).await.unwrap();
        plain
            .login_with_personal_access_token(&token)
            .await
            .unwrap();
        plain.ping().await.unwrap();

        let bad = AutoLogin::Enabled(Credentials::PersonalAccessToken("nope".to_owned().into()));
        assert!(connect(&target.address, bad).await.is_err());
    })
    .await;
}
