# Version-control work: init, add, commit, branch, log, diff.
export HOME=/home/user GIT_AUTHOR_NAME=user GIT_AUTHOR_EMAIL=user@example.invalid
export GIT_COMMITTER_NAME=user GIT_COMMITTER_EMAIL=user@example.invalid
repo=/tmp/repo-$SEED
rm -rf "$repo"; mkdir -p "$repo"; cd "$repo"
git init -q -b main .
cp /home/user/src/*.c .
git add . && git commit -qm "import sources"
for i in $(seq 1 $((2 + SEED % 4))); do
  echo "/* change $i of run $SEED */" >> primes.c
  git commit -qam "change $i"
done
git checkout -qb feature
sed -i 's/count/total/' primes.c && git commit -qam "rename"
git log --oneline --stat >/dev/null
git diff main feature >/dev/null
git checkout -q main && git merge -q --no-edit feature && git gc -q
