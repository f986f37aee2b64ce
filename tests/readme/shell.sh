# Sourced by tests/test_readme.py before each README ```bash block, which runs under `bash -euo pipefail` in a
# fresh directory that is also $RECTORCH_HOME. Each wrapper still runs the real command; it changes only what a
# test cannot afford: training is shrunk by overrides appended at the END (Hydra: the last override wins),
# servers run in the background on a free loopback port until the block ends, and the commands that install,
# download or start the test suite are checked instead of run.
# Inputs: RT_LOGS (a folder for server logs and answers), RT_FREE_PORTS (free ports, space-separated),
# RT_KEEP_LOGGER=1 (keep MLflow: a later command reads the store), RT_SERVER_WAIT (seconds to wait for a server).

declare -A RT_PORT_MAP=()   # the port the README names -> the free port standing in for it
RT_SERVERS=()               # pids (= process groups, via setsid) of the servers this block started
RT_SHRINK=(trainer.max_epochs=1 ++trainer.limit_train_batches=2 ++trainer.limit_val_batches=2 ++trainer.limit_test_batches=2)
RT_SHRINK_SYNTHETIC=(data.source.num_users=300 data.source.num_items=120)

__rt_note() { echo "readme: [$(date +%T)] $*" >&2; }

# __rt_any PATTERN ARGS...: does any argument match the glob PATTERN?
__rt_any() {
  local pattern=$1 arg
  shift
  for arg in "$@"; do
    # shellcheck disable=SC2053
    [[ $arg == $pattern ]] && return 0
  done
  return 1
}

rectorch-train() {
  local extra=("${RT_SHRINK[@]}")
  # the default data (no data=/experiment=/hparams_search=) and data=synthetic are the synthetic generator
  if __rt_any 'data=synthetic' "$@" || ! { __rt_any 'data=*' "$@" || __rt_any 'experiment=*' "$@" \
    || __rt_any 'hparams_search=*' "$@"; }; then
    extra+=("${RT_SHRINK_SYNTHETIC[@]}")
  fi
  __rt_any 'callbacks=*' "$@" || extra+=(callbacks.progress_bar=null)
  [[ ${RT_KEEP_LOGGER:-0} == 1 ]] || __rt_any 'logger=*' "$@" || extra+=(logger=none)
  if __rt_any 'hparams_search=*' "$@" && { __rt_any -m "$@" || __rt_any --multirun "$@"; }; then
    extra+=(hydra.sweeper.n_trials=2)
  fi
  __rt_note "rectorch-train $* [shrunk: ${extra[*]}]"
  command rectorch-train "$@" "${extra[@]}"
}

# CI installs exactly these extras (test_readme checks that every extra the README names exists)
pip() { __rt_note "not re-run: pip $*"; }

python() {
  if [[ ${1-} == -m && ${2-} == pytest ]]; then
    __rt_note "not re-run: python $* (the test suite that runs this block)"
    return 0
  fi
  if [[ ${1-} == -m && ${2-} == rectorch.data.download ]]; then
    # no network in tests: the dataset name and options are parsed (an unknown name fails), nothing is fetched;
    # the destination is a scratch folder all the same
    local argv=() arg dest=0
    for arg in "$@"; do
      if ((dest)); then arg=$RT_LOGS/download dest=0; fi
      [[ $arg == --dest ]] && dest=1
      [[ $arg == --dest=* ]] && arg=--dest=$RT_LOGS/download
      argv+=("$arg")
    done
    __rt_note "not downloaded: python ${argv[*]} (arguments checked with --help)"
    command python "${argv[@]}" --help >/dev/null
    return
  fi
  command python "$@"
}

# __rt_serve README_PORT HEALTH_PATH PROGRAM ARGS...: start PROGRAM in its own process group, with @PORT@ in
# ARGS replaced by a free port, and wait (bounded) until GET HEALTH_PATH answers.
__rt_serve() {
  local readme_port=$1 health=$2 port arg pid deadline argv=()
  shift 2
  port=${RT_FREE_PORTS%% *}
  RT_FREE_PORTS=${RT_FREE_PORTS#"$port"}
  RT_FREE_PORTS=${RT_FREE_PORTS# }
  if [[ -z $port ]]; then
    __rt_note "no free port left for $1"
    return 1
  fi
  for arg in "$@"; do argv+=("${arg//@PORT@/$port}"); done
  setsid "${argv[@]}" >"$RT_LOGS/server-$port.log" 2>&1 &
  pid=$!
  echo "$pid" >>"$RT_LOGS/servers.pids"
  RT_SERVERS+=("$pid")
  RT_PORT_MAP[$readme_port]=$port
  deadline=$((SECONDS + ${RT_SERVER_WAIT:-120}))
  until command curl -sf -o /dev/null "http://127.0.0.1:$port$health"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      __rt_note "$1 exited before answering $health:"
      cat "$RT_LOGS/server-$port.log" >&2
      return 1
    fi
    if ((SECONDS >= deadline)); then
      __rt_note "$1 did not answer $health within ${RT_SERVER_WAIT:-120} s:"
      cat "$RT_LOGS/server-$port.log" >&2
      return 1
    fi
    sleep 0.5
  done
  __rt_note "$1 answers on 127.0.0.1:$port (pid $pid), standing in for port $readme_port"
}

__rt_stop_servers() {
  local pid i
  for pid in "${RT_SERVERS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  for pid in "${RT_SERVERS[@]}"; do
    for ((i = 0; i < 20; i++)); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap __rt_stop_servers EXIT

rectorch-serve() {
  local port=8000 arg # ServeSettings.port
  for arg in "$@"; do [[ $arg == port=* ]] && port=${arg#port=}; done
  __rt_serve "$port" /healthz rectorch-serve "$@" port=@PORT@
}

mlflow() {
  if [[ ${1-} != ui && ${1-} != server ]]; then
    command mlflow "$@"
    return
  fi
  local argv=("$@") port=5000 found=0 i
  for ((i = 1; i < ${#argv[@]}; i++)); do
    case ${argv[i]} in
      --port | -p)
        port=${argv[i + 1]}
        argv[i + 1]=@PORT@
        found=1
        ;;
      --port=*)
        port=${argv[i]#--port=}
        argv[i]=--port=@PORT@
        found=1
        ;;
    esac
  done
  ((found)) || argv+=(--port @PORT@)
  __rt_serve "$port" /health mlflow "${argv[@]}"
  # what the browser would show first: the experiments of the store it serves
  command curl -sf -X POST "http://127.0.0.1:${RT_PORT_MAP[$port]}/api/2.0/mlflow/experiments/search" \
    -H 'Content-Type: application/json' -d '{"max_results": 1000}' >"$RT_LOGS/mlflow-experiments.json"
}

# requests to a port the README names go to the server standing in for it; an HTTP error fails the block
curl() {
  local argv=() arg from
  for arg in "$@"; do
    for from in "${!RT_PORT_MAP[@]}"; do
      arg=${arg//127.0.0.1:$from/127.0.0.1:${RT_PORT_MAP[$from]}}
      arg=${arg//localhost:$from/localhost:${RT_PORT_MAP[$from]}}
    done
    argv+=("$arg")
  done
  command curl --fail-with-body --max-time 60 "${argv[@]}" | tee -a "$RT_LOGS/curl.out"
  echo >>"$RT_LOGS/curl.out"
}

# a --tracking-uri http://127.0.0.1:PORT needs an MLflow server there: started over this directory's store
rectorch-compare() {
  local argv=() arg port
  for arg in "$@"; do
    if [[ $arg =~ ^https?://(127\.0\.0\.1|localhost):([0-9]+) ]]; then
      port=${BASH_REMATCH[2]}
      if [[ -z ${RT_PORT_MAP[$port]-} ]]; then
        mlflow server --backend-store-uri "sqlite:///$PWD/logs/mlflow/mlflow.db" --host 127.0.0.1 --port "$port" \
          --workers 1
      fi
      arg=${arg/:$port/:${RT_PORT_MAP[$port]}}
    fi
    argv+=("$arg")
  done
  __rt_note "rectorch-compare ${argv[*]}"
  command rectorch-compare "${argv[@]}"
}
