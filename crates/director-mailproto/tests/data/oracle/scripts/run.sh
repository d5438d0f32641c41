H=$1; PORT=$2; shift 2
for seq in "$@"; do echo "##### $seq"; eval "python3 probe.py $H $PORT $seq" 2>&1 | grep -v '^S: b.\* OK \[CAPABILITY' ; done
