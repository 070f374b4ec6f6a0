//! What the MQTT connectors' tests share: the private broker (`broker.rs`) and a
//! subscriber that records what it gets. The source's tests include this file by path.

#![allow(dead_code, clippy::unwrap_used)]

#[path = "broker.rs"]
mod broker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use broker::Broker;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// One message a subscriber got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A subscriber on `filter` with a persistent session (clean session off, QoS 1), so a
/// broker restarted gracefully keeps queueing for it; it subscribes again on every
/// connection in case the session was lost. Records every message.
pub struct Subscriber {
    received: Arc<Mutex<Vec<Received>>>,
    subscribed: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    pub async fn start(url: &str, filter: &str) -> Subscriber {
        let broker = iggy_connector_mqtt_sink::BrokerUrl::parse(url).unwrap();
        let mut options = MqttOptions::new(
            iggy_connectors_tests::unique("sub"),
            broker.host,
            broker.port,
        );
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 100);
        let received = Arc::new(Mutex::new(Vec::new()));
        let subscribed = Arc::new(Mutex::new(false));
        let filter = filter.to_owned();
        let task = tokio::spawn({
            let received = received.clone();
            let subscribed = subscribed.clone();
            async move {
                loop {
                    match events.poll().await {
                        Ok(Event::Incoming(Packet::ConnAck(_))) => {
                            client
                                .subscribe(filter.clone(), QoS::AtLeastOnce)
                                .await
                                .unwrap();
                        }
                        Ok(Event::Incoming(Packet::SubAck(_))) => {
                            *subscribed.lock().unwrap() = true
                        }
                        Ok(Event::Incoming(Packet::Publish(publish))) => {
                            received.lock().unwrap().push(Received {
                                topic: publish.topic,
                                payload: publish.payload.to_vec(),
                                retain: publish.retain,
                            });
                        }
                        Ok(_) => {}
                        // The broker is down: the next poll connects again. The pause
                        // paces reconnecting, it synchronises nothing.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        });
        let subscriber = Subscriber {
            received,
            subscribed,
            task,
        };
        let flag = subscriber.subscribed.clone();
        iggy_connectors_tests::eventually("the subscriber subscribed", move || {
            *flag.lock().unwrap()
        })
        .await;
        subscriber
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
