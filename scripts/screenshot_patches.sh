#!/usr/bin/env bash
# Render every Pd patch and help patch in the real Pd GUI, under Xvfb, to small PNGs.
#
#   scripts/screenshot_patches.sh [OUT_DIR]        (default: docs/images)
#
# Needs Debian's puredata-gui (or puredata), xvfb, imagemagick and xdotool:
#   apt-get install -y --no-install-recommends puredata-gui xvfb imagemagick xdotool
# The screen is 1366 x 768, a small laptop's. timbre_transfer.pd is shown live: connected to
# `ddsp-pd serve` (the shipped default model), with an example rendered, when the server can
# start; otherwise as it opens. Each picture is quantised to a few colours to stay small.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/docs/images}"
PATCHES="$ROOT/patches"
EXAMPLE="$ROOT/examples/melody.wav"
SETTLE="${SETTLE:-3}"          # seconds for a window to draw itself
RENDER_WAIT="${RENDER_WAIT:-25}"  # seconds for the live patch to connect, render, draw
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON=python3

for tool in pd Xvfb import convert xdotool; do
    command -v "$tool" >/dev/null || { echo "screenshot_patches: $tool is not installed" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# A display nobody uses.
for n in $(seq 91 140); do
    [ -e "/tmp/.X$n-lock" ] || [ -e "/tmp/.X11-unix/X$n" ] || { DISPLAY_NUM=$n; break; }
done
Xvfb ":$DISPLAY_NUM" -screen 0 1366x768x24 -nolisten tcp >"$WORK/xvfb.log" 2>&1 &
PIDS+=($!)
export DISPLAY=":$DISPLAY_NUM"
for _ in $(seq 50); do xdotool getmouselocation >/dev/null 2>&1 && break; sleep 0.1; done

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# shot PATCH NAME WAIT [pd arguments...]: open PATCH, wait, capture its window as NAME.png.
shot() {
    local patch="$1" name="$2" wait="$3"
    shift 3
    local title
    title="$(basename "$patch")"
    pd -noprefs -nosound -nomidi -stderr "$@" -open "$patch" >"$WORK/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    local wid=""
    for _ in $(seq 100); do
        wid="$(xdotool search --name "^$title" 2>/dev/null | head -1 || true)"
        [ -n "$wid" ] && break
        sleep 0.1
    done
    if [ -z "$wid" ]; then
        echo "screenshot_patches: no window for $title" >&2
        kill "$pid" 2>/dev/null || true
        return 1
    fi
    sleep "$wait"
    import -window "$wid" "$WORK/$name.png"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    convert "$WORK/$name.png" -strip -dither None -colors 48 "PNG8:$OUT/$name.png"
    echo "$OUT/$name.png ($(identify -format '%wx%h' "$OUT/$name.png"))"
}

# ---- the main patch, live when the server starts
SERVER_PID=""
if "$PYTHON" -c "import ddsp_pd" 2>/dev/null && [ -f "$EXAMPLE" ]; then
    PORT="$(free_port)"
    REPLY="$(free_port)"
    mkdir -p "$WORK/renders"
    "$PYTHON" -c "from ddsp_pd.cli import main; main()" serve --port "$PORT" \
        --output-dir "$WORK/renders" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    # wait until it answers /ddsp/ping
    "$PYTHON" - "$PORT" <<'EOF' || SERVER_PID=""
import socket, sys, time
from pythonosc.osc_message_builder import OscMessageBuilder
port = int(sys.argv[1])
ping = OscMessageBuilder(address="/ddsp/ping").build().dgram
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(0.5)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        s.sendto(ping, ("127.0.0.1", port))
        try:
            if b"/ddsp/pong" in s.recv(65536):
                sys.exit(0)
        except OSError:
            pass
sys.exit(1)
EOF
fi
if [ -n "$SERVER_PID" ]; then
    # A helper patch renders once the input is there (3 s after opening).
    cat >"$WORK/render_later.pd" <<'EOF'
#N canvas 0 50 300 200 12;
#X obj 20 20 loadbang;
#X obj 20 50 delay 3000;
#X msg 20 80 \; ddsp-pd render;
#X connect 0 0 1 0;
#X connect 1 0 2 0;
EOF
    shot "$PATCHES/timbre_transfer.pd" timbre_transfer "$RENDER_WAIT" \
        -open "$WORK/render_later.pd" \
        -send "ddsp-pd connect 127.0.0.1 $PORT $REPLY" -send "ddsp-pd input $EXAMPLE"
    kill "$SERVER_PID" 2>/dev/null || true
else
    echo "screenshot_patches: ddsp-pd serve did not start; the main patch is shown offline" >&2
    shot "$PATCHES/timbre_transfer.pd" timbre_transfer "$SETTLE"
fi

# ---- the help patches
for help in "$PATCHES"/abstractions/*-help.pd; do
    name="$(basename "$help" .pd)"
    shot "$help" "$name" "$SETTLE"
done
du -ch "$OUT"/*.png | tail -1
