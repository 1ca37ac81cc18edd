# bash completion for gopulse(1)

_gopulse() {
    local cur prev words cword
    _init_completion || return

    case $prev in
        --socket|-socket)
            _filedir
            return
            ;;
        -o|--o|-output|--output)
            COMPREPLY=($(compgen -W 'table json' -- "$cur"))
            return
            ;;
        --sort|-sort)
            local cols='pid exe go gc forced total-pause last-pause cycles/s heap goal gogc limit goroutines heaplock-wait released rss runq-p99 gsched-p99 threads state'
            [[ ${words[1]} == top || ${words[2]} == top || ${words[3]} == top ]] &&
                cols='pid exe gc/s gc-cpu pause-p99 pause-max heap goal limit goroutines gsched-p99 heaplock-wait/s release/s state'
            local c out=
            for c in $cols; do out+=" $c -$c"; done
            COMPREPLY=($(compgen -W "$out" -- "$cur"))
            return
            ;;
        --last|-last|-n|-d|--window|-window)
            return
            ;;
    esac

    local i cmd=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket|-socket|-o|--o|-output|--output|--last|-last|--sort|-sort|-n|-d|--window|-window) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done

    if [[ $cur == -* ]]; then
        local opts='--socket -o --output'
        case $cmd in
            ps) opts+=' -a --all --sort' ;;
            gc) opts+=' --last -f --follow' ;;
            top) opts+=' -b --batch -n -d --sort -a --window' ;;
            doctor) opts+=' --window' ;;
        esac
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi

    case $cmd in
        '')
            COMPREPLY=($(compgen -W 'ps gc top doctor lock mem sched status help' -- "$cur"))
            ;;
        help)
            COMPREPLY=($(compgen -W 'ps gc top doctor lock mem sched status' -- "$cur"))
            ;;
        gc|doctor|lock|mem|sched)
            # PIDs of the traced processes, when the daemon answers.
            local pids
            pids=$(gopulse ps -o json 2>/dev/null | sed -n 's/^ *"pid": *\([0-9]*\),*$/\1/p')
            COMPREPLY=($(compgen -W "$pids" -- "$cur"))
            ;;
    esac
} &&
    complete -F _gopulse gopulse

# ex: filetype=sh
