#!/bin/sh
# rockroll's Alpine stand-in runs on Debian. Installed as /sbin/apk and as
# /usr/local/sbin/adduser and addgroup, this script takes Alpine's commands as Alpine
# Dockerfiles write them and does the same on Debian: `apk add` installs the Debian packages
# that match the Alpine names, and BusyBox-style `adduser -D -S -G grp user` becomes useradd.
# Debian-style calls (long options) go to Debian's own tools.
set -e

say() { echo "$(basename "$0") (Alpine stand-in): $*" >&2; }

debian_name() { # an Alpine package name -> the Debian names (none: nothing to install)
  case "$1" in
  *[=~\<\>]*) debian_name "$(printf %s "$1" | sed 's/[=~<>].*//')" ;;
  alpine-baselayout* | alpine-keys | apk-tools | busybox* | musl | musl-utils | gcompat | \
    libc6-compat | ca-certificates-bundle | libgcc | libstdc++ | linux-headers | .*) ;;
  bind-tools) echo bind9-dnsutils ;;
  build-base) echo build-essential ;;
  alpine-sdk) echo build-essential git ;;
  musl-dev | libc-dev) echo libc6-dev ;;
  openssh) echo openssh-client openssh-server ;;
  openssh-keygen) echo openssh-client ;;
  openssl-dev | libressl-dev) echo libssl-dev ;;
  curl-dev) echo libcurl4-openssl-dev ;;
  zlib-dev) echo zlib1g-dev ;;
  sqlite) echo sqlite3 ;;
  sqlite-dev) echo libsqlite3-dev ;;
  postgresql-dev | libpq-dev) echo libpq-dev ;;
  postgresql*-client) echo postgresql-client ;;
  postgresql | postgresql[0-9]*) echo postgresql ;;
  mariadb-client | mysql-client) echo default-mysql-client ;;
  mariadb | mysql) echo default-mysql-server ;;
  redis) echo redis-server ;;
  nodejs-current | nodejs-lts) echo nodejs ;;
  iputils) echo iputils-ping ;;
  shadow) echo passwd ;;
  su-exec) echo gosu ;;
  py3-pip) echo python3-pip ;;
  py3-*) echo "python3-${1#py3-}" ;;
  python3-dev | python3) echo "$1" ;;
  lib*-dev) echo "$1" ;;
  *-dev) echo "lib${1%-dev}-dev" ;;
  *) echo "$1" ;;
  esac
}

apt_install() {
  [ -n "$(ls /var/lib/apt/lists/ 2>/dev/null | grep _Packages)" ] || apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

apk_add() {
  virtual="" names=""
  while [ $# -gt 0 ]; do
    case "$1" in
    -t | --virtual) virtual="$2"; shift ;;
    -X | --repository | --repositories-file | -p | --root | --cache-dir | --arch) shift ;;
    -U | --update-cache) apt-get update -qq ;;
    -*) ;; # --no-cache, --quiet, --upgrade, --allow-untrusted, ...: nothing to do here
    *) names="$names $(debian_name "$1")" ;;
    esac
    shift
  done
  [ -z "$names" ] && return 0
  # shellcheck disable=SC2086
  apt_install $names || { say "could not install Debian packages:$names"; return 1; }
  if [ -n "$virtual" ]; then
    mkdir -p /var/lib/rockroll-apk
    echo "$names" >"/var/lib/rockroll-apk/$virtual"
  fi
}

apk_del() {
  names=""
  for arg in "$@"; do
    case "$arg" in
    -*) ;;
    *) if [ -f "/var/lib/rockroll-apk/$arg" ]; then
      names="$names $(cat "/var/lib/rockroll-apk/$arg")"
      rm -f "/var/lib/rockroll-apk/$arg"
    else
      names="$names $(debian_name "$arg")"
    fi ;;
    esac
  done
  # shellcheck disable=SC2086
  [ -z "$names" ] || DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq --autoremove $names
}

apk_main() {
  while [ $# -gt 0 ]; do
    case "$1" in
    -*) shift ;;
    *) break ;;
    esac
  done
  command="${1:-}"
  [ $# -gt 0 ] && shift
  case "$command" in
  add) apk_add "$@" ;;
  del) apk_del "$@" ;;
  update) apt-get update -qq ;;
  upgrade | cache | fix) ;;
  info) for n in "$@"; do case "$n" in -*) ;; *) dpkg -s $(debian_name "$n") >/dev/null ;; esac; done ;;
  *) say "only add, del, update, upgrade and info are supported (got '$command')"; exit 1 ;;
  esac
}

busybox_style() { # no long options: the call is BusyBox's, not Debian's
  for arg in "$@"; do case "$arg" in --*) return 1 ;; esac; done
}

adduser_main() {
  busybox_style "$@" || exec /usr/sbin/adduser "$@"
  set -- "$@" --end-of-options
  opts="" home=1 group=""
  while [ "$1" != "--end-of-options" ]; do
    case "$1" in
    -h) opts="$opts -d $2"; shift ;;
    -g) opts="$opts -c $2"; shift ;;
    -s) opts="$opts -s $2"; shift ;;
    -u) opts="$opts -u $2"; shift ;;
    -k) opts="$opts -k $2"; shift ;;
    -G) group="$2"; shift ;;
    -S) opts="$opts -r" ;;
    -H) home=0 ;;
    -D) ;;
    -*) say "unsupported option $1"; exit 1 ;;
    *) set -- "$@" "$1" ;;
    esac
    shift
  done
  shift # the marker; the positionals remain
  if [ $# -eq 2 ] && id "$1" >/dev/null 2>&1; then exec usermod -aG "$2" "$1"; fi
  [ $home -eq 1 ] && opts="$opts -m"
  if [ -n "$group" ]; then opts="$opts -g $group"; else opts="$opts -U"; fi
  # shellcheck disable=SC2086
  exec useradd $opts "$1"
}

addgroup_main() {
  busybox_style "$@" || exec /usr/sbin/addgroup "$@"
  opts="" names=""
  while [ $# -gt 0 ]; do
    case "$1" in
    -g) opts="$opts -g $2"; shift ;;
    -S) opts="$opts -r" ;;
    -*) say "unsupported option $1"; exit 1 ;;
    *) names="$names $1" ;;
    esac
    shift
  done
  # shellcheck disable=SC2086
  set -- $names
  if [ $# -eq 2 ]; then exec usermod -aG "$2" "$1"; fi
  # shellcheck disable=SC2086
  exec groupadd $opts "$1"
}

case "$(basename "$0")" in
adduser) adduser_main "$@" ;;
addgroup) addgroup_main "$@" ;;
*) apk_main "$@" ;;
esac
