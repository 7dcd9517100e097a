#!/usr/bin/env bash
# Installs edge-gateway as a systemd service. On a Raspberry Pi (Raspberry Pi OS or
# Debian), from a clone of the repository:
#
#   sudo systemd/install.sh                      install or update, enable and start
#   sudo systemd/install.sh --uninstall          stop and disable; remove the unit and
#                                                /opt/edge-gateway; keep config and state
#   sudo systemd/install.sh --uninstall --purge  the same, and remove config and state too
#   systemd/install.sh --root DIR                dry run into DIR as a fake root
#
# A real install does each of these only when needed, and prints each change it makes;
# a second run changes nothing:
#   - apt-get install python3-venv python3-dev libsystemd-dev pkg-config gcc i2c-tools
#     (systemd-python builds against libsystemd; i2c-tools brings the i2c group and the
#     udev rule giving it /dev/i2c-*);
#   - groups i2c and dialout; system user edge-gateway (no login shell, home
#     /var/lib/edge-gateway, not created) in both;
#   - /opt/edge-gateway/venv: python3 -m venv, pip install wheel (so pip builds
#     systemd-python, a source-only package, as a wheel rather than by the deprecated
#     `setup.py install`), then pip install of the source (again only
#     when the source changed: /opt/edge-gateway/source.sha256 records what is installed);
#   - /etc/edge-gateway/gateway.yaml (root:edge-gateway 0640) from config/example.yaml;
#     an existing file is kept byte for byte;
#   - /var/lib/edge-gateway (edge-gateway:edge-gateway 0750); when the package was
#     (re)installed, the firmware slots there, the link to the active one and the firmware
#     record are removed (the service stopped first), so the launcher runs what was just
#     installed: a manual install takes over from firmware updates;
#   - /usr/local/bin/edge-gateway, a symbolic link to the venv's command;
#   - /etc/systemd/system/edge-gateway.service from systemd/edge-gateway.service, whose
#     ExecStart is the venv's `edge-gateway launch`, the stable launcher of firmware
#     updates (it starts the active slot under /var/lib/edge-gateway, or this venv);
#   - systemctl daemon-reload, enable, start (restart when the unit or package changed).
# Uninstalling keeps the user and groups (files elsewhere may belong to them).
# pip runs with the caller's environment, so an offline install works from a directory of
# wheels (the dependencies, setuptools and wheel):
#   sudo PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR systemd/install.sh
#
# --root DIR builds the same tree under DIR and touches nothing outside it: user, group,
# ownership, apt-get and systemctl steps are printed as "would: COMMAND" lines instead of
# being run, and /opt/edge-gateway/venv/bin/edge-gateway is a placeholder script, unless
# --with-venv builds a real venv there (slow: pip downloads the dependencies; the venv
# works only at DIR/opt/edge-gateway/venv).
#
# Exit status: 0 done, 1 failure, 2 bad usage; errors are one line on stderr.
set -Eeuo pipefail
umask 022

PROG=install.sh
NAME=edge-gateway
USER_NAME=edge-gateway
GROUPS_NEEDED=(i2c dialout)
APT_PACKAGES=(python3-venv python3-dev libsystemd-dev pkg-config gcc i2c-tools)

die() { echo "$PROG: $*" >&2; exit 1; }
usage_error() { echo "$PROG: $* (see --help)" >&2; exit 2; }
trap 'echo "$PROG: failed: $BASH_COMMAND (line $LINENO)" >&2; exit 1' ERR

usage() {
  cat <<EOF
usage: sudo $0 [--source DIR]
           install or update, enable and start (--source: the package source, default
           the repository holding this script)
       sudo $0 --uninstall [--purge]
           stop, disable, remove the unit, /opt/edge-gateway and the link in
           /usr/local/bin; keep /etc/edge-gateway and /var/lib/edge-gateway (--purge
           removes them too)
       $0 --root DIR [--with-venv] [--uninstall [--purge]] [--source DIR]
           the same into DIR as a fake root, touching nothing outside it; prints the
           user, group, ownership, apt-get and systemctl steps as "would: ..." lines
EOF
}

ROOT=""
SOURCE=""
UNINSTALL=0
PURGE=0
WITH_VENV=0
while (($#)); do
  case "$1" in
    --root)
      (($# >= 2)) || usage_error "--root needs a directory"
      ROOT=$2
      shift
      ;;
    --root=*) ROOT=${1#--root=} ;;
    --source)
      (($# >= 2)) || usage_error "--source needs a directory"
      SOURCE=$2
      shift
      ;;
    --source=*) SOURCE=${1#--source=} ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --with-venv) WITH_VENV=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) usage_error "unknown argument: $1" ;;
  esac
  shift
done

((PURGE == 0 || UNINSTALL == 1)) || usage_error "--purge only goes with --uninstall"
if ((WITH_VENV)); then
  [ -n "$ROOT" ] || usage_error "--with-venv only goes with --root (a real install always builds the venv)"
  ((UNINSTALL == 0)) || usage_error "--with-venv does not go with --uninstall"
fi

DRY=0
if [ -n "$ROOT" ]; then
  [ -d "$ROOT" ] || usage_error "--root $ROOT: no such directory"
  ROOT=$(cd "$ROOT" && pwd -P)
  [ "$ROOT" != / ] || usage_error "--root / is the machine itself: run without --root for a real install"
  DRY=1
fi

if [ -z "$SOURCE" ]; then
  SOURCE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
else
  [ -d "$SOURCE" ] || usage_error "--source $SOURCE: no such directory"
  SOURCE=$(cd "$SOURCE" && pwd -P)
fi
for f in pyproject.toml systemd/edge-gateway.service config/example.yaml; do
  [ -f "$SOURCE/$f" ] || usage_error "$SOURCE is not an edge-gateway source tree (no $f)"
done

if ((!DRY)); then
  [ "$(id -u)" = 0 ] || die "a real install needs root: run it with sudo (or try --root DIR for a dry run)"
  [ -d /run/systemd/system ] || die "systemd is not running on this machine (no /run/systemd/system)"
fi

PREFIX=$ROOT/opt/edge-gateway
VENV=$PREFIX/venv
STAMP=$PREFIX/source.sha256
CONF_DIR=$ROOT/etc/edge-gateway
CONF=$CONF_DIR/gateway.yaml
STATE_DIR=$ROOT/var/lib/edge-gateway
UNIT_DIR=$ROOT/etc/systemd/system
UNIT=$UNIT_DIR/$NAME.service
LINK=$ROOT/usr/local/bin/$NAME
LINK_TARGET=/opt/edge-gateway/venv/bin/$NAME

CHANGES=0
changed() {
  echo "$*"
  CHANGES=$((CHANGES + 1))
}

# A command acting on the machine itself: run it (and say so), or in --root mode print
# what would run.
act() {
  local line="" arg
  for arg in "$@"; do
    if [[ $arg =~ ^[A-Za-z0-9_./:=,@+%-]+$ ]]; then
      line+=" $arg"
    else
      line+=" $(printf %q "$arg")"
    fi
  done
  if ((DRY)); then
    echo "would:$line"
  else
    echo "run:$line"
    "$@"
  fi
}

# ensure_dir MODE OWNER:GROUP PATH
ensure_dir() {
  local mode=$1 owner=$2 path=$3
  if [ ! -d "$path" ]; then
    mkdir -p "$path"
    chmod "$mode" "$path"
    changed "created $path"
  elif [ "$(stat -c %a "$path")" != "${mode#0}" ]; then
    chmod "$mode" "$path"
    changed "mode $mode $path"
  fi
  ensure_owner "$owner" "$path"
}

ensure_owner() {
  local owner=$1 path=$2
  if ((DRY)); then
    [ "$owner" = root:root ] || echo "would: chown $owner $path"
  elif [ "$(stat -c %U:%G "$path")" != "$owner" ]; then
    chown "$owner" "$path"
    changed "owner $owner $path"
  fi
}

# install_file MODE OWNER:GROUP SRC DEST: copies SRC when DEST differs or is missing;
# sets COPIED to 1 when it did. (Functions report through variables, not their status:
# bash ignores set -e inside a function called as a condition.)
COPIED=0
install_file() {
  local mode=$1 owner=$2 src=$3 dest=$4
  COPIED=0
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then
      chmod "$mode" "$dest"
      changed "mode $mode $dest"
    fi
  else
    local what=created
    [ ! -e "$dest" ] || what=updated
    install -m "$mode" "$src" "$dest"
    changed "$what $dest"
    COPIED=1
  fi
  ensure_owner "$owner" "$dest"
}

remove() {
  local path=$1
  if [ -e "$path" ] || [ -L "$path" ]; then
    rm -rf "$path"
    changed "removed $path"
  fi
}

# After the package was (re)installed: what firmware updates installed must not go on
# running instead of it (the launcher starts the active slot whenever there is one).
reset_firmware() {
  local stale=() path
  for path in "$STATE_DIR/current" "$STATE_DIR/slots" "$STATE_DIR/firmware"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      stale+=("$path")
    fi
  done
  ((${#stale[@]})) || return 0
  if ((!DRY)) && systemctl --quiet is-active "$NAME"; then
    act systemctl stop "$NAME"
  fi
  for path in "${stale[@]}"; do
    remove "$path"
  done
}

# The files pip builds the package from; their hash tells whether the venv is current.
source_items() {
  local f
  for f in pyproject.toml setup.cfg setup.py MANIFEST.in README.md LICENSE gateway drivers; do
    if [ -e "$SOURCE/$f" ]; then
      echo "$f"
    fi
  done
}

source_hash() {
  local items
  mapfile -t items < <(source_items)
  (cd "$SOURCE" && find "${items[@]}" -name __pycache__ -prune -o -type f ! -name '*.pyc' -print0 |
    LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum | cut -d' ' -f1
}

STAGE=""
cleanup() { [ -z "$STAGE" ] || rm -rf "$STAGE"; }
trap cleanup EXIT

# Sets PACKAGE_CHANGED to 1 when it (re)installed the package.
PACKAGE_CHANGED=0
ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    changed "created $VENV (python3 -m venv)"
  fi
  local hash
  hash=$(source_hash)
  if [ -x "$VENV/bin/$NAME" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
    return
  fi
  # pip builds in the source tree (build/, *.egg-info): build from a copy instead, so a
  # clone owned by the pi user gets no root-owned files.
  local items
  mapfile -t items < <(source_items)
  STAGE=$(mktemp -d)
  tar -C "$SOURCE" --exclude=__pycache__ --exclude='*.pyc' -cf - "${items[@]}" | tar -C "$STAGE" -xf -
  echo "installing $SOURCE into $VENV (minutes on a Pi Zero)"
  # systemd-python has no wheel on PyPI: without wheel in the venv, pip would build it
  # with the deprecated `setup.py install`.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check wheel
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$STAGE"
  echo "$hash" >"$STAMP"
  chmod 0644 "$STAMP"
  changed "installed $SOURCE into $VENV"
  PACKAGE_CHANGED=1
}

ensure_placeholder() {
  local tmp
  tmp=$(mktemp)
  cat >"$tmp" <<'EOF'
#!/bin/sh
# Placeholder written by systemd/install.sh --root: no venv was built (--with-venv builds one).
echo "edge-gateway: placeholder from install.sh --root; no venv was built" >&2
exit 1
EOF
  mkdir -p "$VENV/bin"
  install_file 0755 root:root "$tmp" "$VENV/bin/$NAME"
  rm -f "$tmp"
}

# /usr/local/bin/edge-gateway -> the venv's, so `edge-gateway scan` works from a shell.
# Something else already there is left alone.
ensure_link() {
  if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$LINK_TARGET" ]; then
    return
  fi
  if [ -e "$LINK" ] || [ -L "$LINK" ]; then
    echo "kept $LINK (not ours: call $LINK_TARGET instead)"
    return
  fi
  mkdir -p "$(dirname "$LINK")"
  ln -s "$LINK_TARGET" "$LINK"
  changed "created $LINK -> $LINK_TARGET"
}

ensure_apt_packages() {
  if ((DRY)); then
    act apt-get install -y --no-install-recommends "${APT_PACKAGES[@]}"
    return
  fi
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if ((${#missing[@]})); then
    act apt-get update -qq
    act env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    changed "installed ${missing[*]}"
  fi
}

ensure_user() {
  local g
  if ((DRY)); then
    for g in "${GROUPS_NEEDED[@]}"; do
      act groupadd --system "$g"
    done
    act useradd --system --user-group --home-dir /var/lib/edge-gateway --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-gateway sensor gateway" "$USER_NAME"
    act usermod --append --groups "$(IFS=,; echo "${GROUPS_NEEDED[*]}")" "$USER_NAME"
    return
  fi
  for g in "${GROUPS_NEEDED[@]}"; do
    if ! getent group "$g" >/dev/null; then
      act groupadd --system "$g"
      changed "created group $g"
    fi
  done
  if ! getent passwd "$USER_NAME" >/dev/null; then
    act useradd --system --user-group --home-dir /var/lib/edge-gateway --no-create-home \
      --shell /usr/sbin/nologin --comment "edge-gateway sensor gateway" "$USER_NAME"
    changed "created user $USER_NAME"
  fi
  local have
  have=" $(id -nG "$USER_NAME") "
  for g in "${GROUPS_NEEDED[@]}"; do
    if [[ $have != *" $g "* ]]; then
      act usermod --append --groups "$g" "$USER_NAME"
      changed "added $USER_NAME to group $g"
    fi
  done
}

do_install() {
  ensure_apt_packages
  ensure_user

  ensure_dir 0755 root:root "$PREFIX"
  if ((DRY && !WITH_VENV)); then
    ensure_placeholder
  else
    ensure_venv
  fi
  ensure_link

  ensure_dir 0750 "root:$USER_NAME" "$CONF_DIR"
  if [ -e "$CONF" ]; then
    echo "kept $CONF (an existing configuration is never overwritten)"
    if ((!DRY)) && ! runuser -u "$USER_NAME" -- test -r "$CONF"; then
      echo "$PROG: warning: user $USER_NAME cannot read $CONF: the service will not start" >&2
    fi
  else
    install_file 0640 "root:$USER_NAME" "$SOURCE/config/example.yaml" "$CONF"
    echo "edit $CONF (device_id, mqtt.brokers, sensors), then: sudo systemctl restart $NAME"
  fi

  ensure_dir 0750 "$USER_NAME:$USER_NAME" "$STATE_DIR"
  if ((PACKAGE_CHANGED)); then
    reset_firmware
  fi

  ensure_dir 0755 root:root "$UNIT_DIR"
  install_file 0644 root:root "$SOURCE/systemd/$NAME.service" "$UNIT"
  local unit_changed=$COPIED

  if ((DRY)); then
    act systemctl daemon-reload
    act systemctl enable --now "$NAME"
    return
  fi
  if ((unit_changed)); then
    act systemctl daemon-reload
  fi
  if ! systemctl --quiet is-enabled "$NAME" 2>/dev/null; then
    act systemctl enable --quiet "$NAME"
    changed "enabled $NAME"
  fi
  local verb=""
  if ! systemctl --quiet is-active "$NAME"; then
    verb=start
  elif ((unit_changed || PACKAGE_CHANGED)); then
    verb=restart
  fi
  if [ -n "$verb" ]; then
    "$VENV/bin/$NAME" check-config "$CONF" ||
      die "$CONF is invalid (see above): fix it, then: sudo systemctl restart $NAME"
    act systemctl "$verb" "$NAME" || die "$NAME did not $verb: journalctl -u $NAME -n 50"
    changed "${verb}ed $NAME"
  fi
}

do_uninstall() {
  if ((DRY)); then
    act systemctl disable --now "$NAME"
  else
    if systemctl --quiet is-active "$NAME" || systemctl --quiet is-enabled "$NAME" 2>/dev/null; then
      act systemctl disable --now --quiet "$NAME"
      changed "stopped and disabled $NAME"
    fi
  fi
  local had_unit=0
  [ ! -e "$UNIT" ] || had_unit=1
  remove "$UNIT"
  if ((DRY)); then
    act systemctl daemon-reload
  elif ((had_unit)); then
    act systemctl daemon-reload
  fi
  remove "$PREFIX"
  if [ -L "$LINK" ] && [ "$(readlink "$LINK")" = "$LINK_TARGET" ]; then
    remove "$LINK"
  fi
  if ((PURGE)); then
    remove "$UNIT_DIR/$NAME.service.d"
    remove "$CONF_DIR"
    remove "$STATE_DIR"
  else
    [ ! -e "$CONF_DIR" ] || echo "kept $CONF_DIR (configuration; --purge removes it)"
    [ ! -e "$STATE_DIR" ] || echo "kept $STATE_DIR (state; --purge removes it)"
  fi
  echo "kept user $USER_NAME and groups ${GROUPS_NEEDED[*]} (userdel $USER_NAME removes the user)"
}

if ((UNINSTALL)); then
  do_uninstall
else
  do_install
fi

if ((CHANGES)); then
  echo "$PROG: done, $CHANGES change(s)"
else
  echo "$PROG: done, nothing changed"
fi
