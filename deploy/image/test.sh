#!/usr/bin/env bash
# `make image-test`: run the built image against this machine's PostgreSQL, as a runtime would.
#
# With no container daemon here, the image is run with buildah: `buildah from` makes a working
# container; one-off commands (migrate, token, the HEALTHCHECK) go through
# `buildah run --isolation chroot`; the server is started from the image's own configuration
# (User, Env, WorkingDir, ENTRYPOINT + CMD) as PID 1 of a new PID namespace over the container's
# mounted root (`buildah run --isolation chroot` cannot make a PID namespace, and docker, podman
# and Kubernetes all run the entrypoint as PID 1: that changes how a process ends on SIGTERM).
# The network is the host's, so the server listens on a free port instead of the CMD's 8000.
#
# Steps: fresh database -> `task-assistant migrate` -> no dev tools -> `task-assistant token` -> serve ->
# /health/ready 200 -> the image's HEALTHCHECK passes -> a chat turn that runs add_task ->
# GET /api/tasks shows the task -> SIGTERM -> exit code 0 within $STOP_LIMIT seconds.
#
# Environment: IMAGE (localhost/task-assistant:latest), PGHOST/PGPORT/PGUSER (127.0.0.1, 5432,
# postgres; trust auth), PORT (a free one), STOP_LIMIT (10), KEEP=1 keeps container and database.
set -euo pipefail

IMAGE=${IMAGE:-localhost/task-assistant:latest}
PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
export PGHOST PGPORT PGUSER
STOP_LIMIT=${STOP_LIMIT:-10}
read -r -a BUILDAH <<<"${BUILDAH:-buildah --storage-driver vfs}"
DB=task_assistant_image_test_$$_$(date +%s)
DATABASE_URL=postgresql://$PGUSER@$PGHOST:$PGPORT/$DB
PORT=${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
BASE=http://127.0.0.1:$PORT
T0=$(date +%s%N)
WORK=$(mktemp -d)
CTR="" MNT="" SERVER_PID=""

ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
log() { local ms; ms=$(ms_since "$T0"); printf '==> [%3d.%01ds] %s\n' $((ms / 1000)) $((ms % 1000 / 100)) "$*" >&2; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    if [[ -s $WORK/serve.log ]]; then echo "--- server log (last 30 lines)" >&2; tail -n 30 "$WORK/serve.log" >&2; fi
    exit 1
}

cleanup() {
    local rc=$?
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true  # our own unshare; its PID 1 dies with it
    fi
    if [[ -z ${KEEP:-} ]]; then
        [[ -n $MNT ]] && "${BUILDAH[@]}" umount "$CTR" >/dev/null 2>&1
        [[ -n $CTR ]] && "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1
        psql -qX -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
    else
        echo "kept: container $CTR (mounted at $MNT), database $DB" >&2
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT

# The image's configuration, as a runtime reads it.
"${BUILDAH[@]}" inspect --type image "$IMAGE" >"$WORK/image.json" || fail "no image $IMAGE (make image)"
conf() { python3 -c 'import json, sys; c = json.load(open(sys.argv[1]))["Docker"]["config"]; exec(sys.argv[2])' "$WORK/image.json" "$@"; }
USER_SPEC=$(conf 'print(c["User"])')
WORKDIR=$(conf 'print(c.get("WorkingDir") or "/")')
mapfile -t ENV_LIST < <(conf 'print("\n".join(c.get("Env") or []))')
# ENTRYPOINT + CMD, the CMD's port swapped for ours (the host network is shared).
mapfile -t ARGV < <(conf 'print("\n".join(c["Entrypoint"] + [a if a != "8000" else sys.argv[3] for a in c["Cmd"]]))' "$PORT")
mapfile -t HEALTHCHECK < <(conf 'print("\n".join(a.replace(":8000/", ":" + sys.argv[3] + "/") for a in c["Healthcheck"]["Test"][1:]))' "$PORT")
(( ${#ARGV[@]} > 1 && ${#HEALTHCHECK[@]} > 0 )) || fail "image has no ENTRYPOINT/CMD or HEALTHCHECK"
[[ ${USER_SPEC%%:*} =~ ^[1-9][0-9]*$ ]] || fail "image User is '$USER_SPEC', not a numeric non-root uid"
log "image $IMAGE: user $USER_SPEC, workdir $WORKDIR, command: ${ARGV[*]}"

psql -qX -d postgres -c "CREATE DATABASE $DB" || fail "cannot create database on $PGHOST:$PGPORT"
CTR=$("${BUILDAH[@]}" from --name "task-assistant-image-test-$$" "$IMAGE")
log "container $CTR, database $DB"

run() { "${BUILDAH[@]}" run --isolation chroot --env "DATABASE_URL=$DATABASE_URL" "$CTR" -- "$@"; }
run task-assistant migrate || fail "task-assistant migrate"
log "migrated"
run python3 -c 'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("pytest", "mypy", "ruff", "schemathesis")))' \
    || fail "the image holds dev tools (the dev extra was installed)"
log "no dev tools (pytest, mypy, ruff, schemathesis) in the image"
TOKEN=$(run task-assistant token alice) || fail "task-assistant token"
log "minted a development token in the container's DATA_DIR"

# Serve: PID 1 of a new PID namespace, chrooted into the container's root as the image's user,
# with exactly the image's environment (plus DATABASE_URL); /dev and /proc as a runtime gives.
MNT=$("${BUILDAH[@]}" mount "$CTR")
# HOME as runtimes set it when the image does not: the user's home in the image's /etc/passwd.
HOME_DIR=$(awk -F: -v uid="${USER_SPEC%%:*}" '$3 == uid {print $6}' "$MNT/etc/passwd")
unshare --pid --fork --mount --mount-proc="$MNT/proc" \
    sh -c 'root=$1 user=$2; shift 2; mount --rbind /dev "$root/dev" && exec chroot --userspec="$user" "$root" "$@"' \
    sh "$MNT" "$USER_SPEC" \
    /usr/bin/env -i -C "$WORKDIR" "HOME=${HOME_DIR:-/}" "${ENV_LIST[@]}" "DATABASE_URL=$DATABASE_URL" "${ARGV[@]}" \
    >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!  # unshare: it exits as its child (the server) does, signal included

ready=""
for _ in $(seq 1 300); do
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited during start-up"
    if [[ $(curl -s -o "$WORK/ready.json" -w '%{http_code}' "$BASE/health/ready" || true) == 200 ]]; then ready=1; break; fi
    sleep 0.2
done
[[ -n $ready ]] || fail "/health/ready did not answer 200 within 60 s"
APP_PID=$(pgrep -P "$SERVER_PID")
[[ $(awk '/^Uid:/ {print $2}' "/proc/$APP_PID/status") == "${USER_SPEC%%:*}" ]] || fail "server not running as $USER_SPEC"
[[ $(awk '/^NSpid:/ {print $NF}' "/proc/$APP_PID/status") == 1 ]] || fail "server is not PID 1 of its namespace"
log "ready: $(cat "$WORK/ready.json") (pid $APP_PID, PID 1 in its namespace, uid ${USER_SPEC%%:*})"

run "${HEALTHCHECK[@]}" || fail "the image's HEALTHCHECK command failed"
log "the image's HEALTHCHECK command passes"

H="Authorization: Bearer $TOKEN"
code=$(curl -s -o "$WORK/chat.json" -w '%{http_code}' -X POST "$BASE/api/chat" -H "$H" \
       -H 'Content-Type: application/json' -d '{"message": "add buy milk"}')
[[ $code == 200 ]] || fail "POST /api/chat answered $code: $(cat "$WORK/chat.json")"
python3 - "$WORK/chat.json" <<'PY' || fail "chat turn: $(cat "$WORK/chat.json")"
import json, sys
body = json.load(open(sys.argv[1]))
calls = [c for c in body["tool_calls"] if c["tool"] == "add_task"]
assert calls and calls[0]["result"].get("status") == "created", body
print("==> chat:", body["response"], file=sys.stderr)
PY
code=$(curl -s -o "$WORK/tasks.json" -w '%{http_code}' "$BASE/api/tasks" -H "$H")
[[ $code == 200 ]] || fail "GET /api/tasks answered $code"
python3 - "$WORK/tasks.json" <<'PY' || fail "task list: $(cat "$WORK/tasks.json")"
import json, sys
tasks = json.load(open(sys.argv[1]))["tasks"]
assert [t["title"].lower() for t in tasks] == ["buy milk"], tasks
PY
log "GET /api/tasks lists the task the chat turn added"

kill -TERM "$APP_PID"
t_stop=$(date +%s%N)
rc=0
while kill -0 "$SERVER_PID" 2>/dev/null; do
    (( $(ms_since "$t_stop") < STOP_LIMIT * 1000 )) || fail "still running $STOP_LIMIT s after SIGTERM"
    sleep 0.05
done
wait "$SERVER_PID" || rc=$?
SERVER_PID=""
took=$(ms_since "$t_stop")
[[ $rc == 0 ]] || fail "exit code $rc after SIGTERM (wanted 0)"
grep -q "Application shutdown complete" "$WORK/serve.log" || fail "no orderly shutdown in the log"
log "SIGTERM: exit code 0 after $took ms"
echo "image-test passed: $IMAGE"
