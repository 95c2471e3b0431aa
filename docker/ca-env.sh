# Sourced by the Dockerfile's RUN steps that reach PyPI. A corporate proxy's CA bundle, passed as
# the build secret `ca` (`--secret id=ca,src=/etc/ssl/certs/ca-certificates.crt`), is mounted at
# /run/secrets/ca for that step only and never lands in a layer. Without it nothing changes.
if [ -s /run/secrets/ca ]; then
  export PIP_CERT=/run/secrets/ca REQUESTS_CA_BUNDLE=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca
fi
