# enable-node-exporter: node exporter runs now and at every boot.
apply_service prometheus-node-exporter no
systemctl is-enabled prometheus-node-exporter
