# enable-docker: the Docker engine runs now and at every boot; when it does not, show the engine's own error.
systemctl enable --quiet docker
systemctl is-active --quiet docker || systemctl start docker || true
if ! docker info >/dev/null 2>&1; then
    echo "the Docker engine does not answer. Docker in an unprivileged container needs the features nesting=1 and"
    echo "keyctl=1, set before it starts: a container that ran before Docker was asked for gets them when it is"
    echo "stopped (the reconciler sets them, then starts it). What the engine and its service say follows"
    systemctl status docker --no-pager --lines=20 2>&1 | tail -n 25 || true
    said=$(docker info 2>&1 | grep -m 1 -i -E '^ *error:|cannot connect|permission denied' || true)
    echo "docker info: ${said:-no answer}"
    exit 1
fi
docker version --format 'Docker engine {{.Server.Version}} answers'
