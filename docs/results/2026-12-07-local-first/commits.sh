#!/usr/bin/env bash
# usage: commits.sh BIN NAME
BIN=$1; NAME=$2; DIR=/tmp/dev-$NAME  # a shoal binary, a name for the files
rm -rf $DIR
$BIN dev --dir $DIR > $DIR.log 2>&1 &
DEVPID=$!
for i in $(seq 100); do grep -q "running;" $DIR.log 2>/dev/null && break; sleep 0.3; done
NODES=$(grep -o "export SHOAL_NODES=[^ ]*" $DIR.log | cut -d= -f2)
METRICS=$(grep -o "metrics http://[0-9.:]*" $DIR.log | sed 's|metrics http://||' | paste -sd,)
scrape() { for m in ${METRICS//,/ }; do curl -s http://$m/metrics; done | awk '/^shoal_storage_commits_total|^shoal_storage_batches_total|^shoal_storage_writes_total/ {s[$1]+=$2} END {for (k in s) printf "%s=%d ", k, s[k]; print ""}'; }
echo "before: $(scrape)"
$BIN bench --node ${NODES%%,*} --certs $DIR/certs --workload w1 --phases a --quiet > /tmp/commits-$NAME.txt 2>&1
echo "after: $(scrape)"
grep -E "ops/s over|CPU per|preload:" /tmp/commits-$NAME.txt
kill -INT $DEVPID; wait $DEVPID
