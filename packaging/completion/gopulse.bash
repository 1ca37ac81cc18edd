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
        --last|-last)
            return
            ;;
    esac

    local i cmd=
    for ((i = 1; i < cword; i++)); do
        case ${words[i]} in
            --socket|-socket|-o|--o|-output|--output|--last|-last) ((i++)) ;;
            -*) ;;
            *) cmd=${words[i]}; break ;;
        esac
    done

    if [[ $cur == -* ]]; then
        local opts='--socket -o --output'
        [[ $cmd == gc ]] && opts+=' --last'
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
        return
    fi

    case $cmd in
        '')
            COMPREPLY=($(compgen -W 'ps gc status help' -- "$cur"))
            ;;
        help)
            COMPREPLY=($(compgen -W 'ps gc status' -- "$cur"))
            ;;
        gc)
            # PIDs of the traced processes, when the daemon answers.
            local pids
            pids=$(gopulse ps -o json 2>/dev/null | sed -n 's/^ *"pid": *\([0-9]*\),*$/\1/p')
            COMPREPLY=($(compgen -W "$pids" -- "$cur"))
            ;;
    esac
} &&
    complete -F _gopulse gopulse

# ex: filetype=sh
