@tamper
Feature: Tampering with a run is caught, and its view can be rebuilt from the log
  The run log is the only record of what happened, so it must not change once
  written. The database refuses every change to a recorded event; and if
  someone with the rights to switch that protection off rewrites history
  anyway, replay must name the first event whose content no longer matches its
  place in the hash chain, instead of quietly trusting it. The run view is only
  a projection: when it is edited, replay notices and the log rebuilds it.

  Background:
    Given the project "acme" with the workflow "order-sync":
      | step     | type      | does                                 | then                |
      | map      | transform | {id: order.id, total: order.sum}     | push                |
      | push     | http_call | POST the mapped order to /orders     | check               |
      | check    | branch    | when push answered 200               | done, else rejected |
      | done     | terminate | succeeded                            |                     |
      | rejected | terminate | failed: the order service refused it |                     |

  Scenario: The database refuses to change what a run recorded
    Given "acme" has a finished run of "order-sync"
    When someone tries to change the recorded output of "map"
    Then the database refuses because "run_events is append-only"
    And the run replays exactly from its log

  @smoke
  Scenario: A recorded output rewritten with the protection switched off breaks the hash chain there
    Given "acme" has a finished run of "order-sync"
    When someone rewrites the result of "map" behind the engine's back
    And the run is replayed
    Then replay reports the hash chain broken at event 3

  Scenario: A run view edited behind the engine's back is caught by replay
    Given "acme" has a finished run of "order-sync"
    When someone marks the run as failed behind the engine's back
    And the run is replayed
    Then replay says the run view differs from the log in "status"

  Scenario: A run view edited behind the engine's back is rebuilt from the log
    Given "acme" has a finished run of "order-sync"
    When someone marks the run as failed behind the engine's back
    And the run views are rebuilt from the log
    Then rebuilding repaired the run
    And the run replays exactly from its log

  Scenario: A waiting run whose view was forged to say it finished is put back to waiting, and still sends its reminder
    Given the project "acme" with the workflow "order-follow-up":
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And a run of "order-follow-up" that is waiting in "wait"
    And someone marks the run as succeeded behind the engine's back
    When the run views are rebuilt from the log
    And the clock moves forward 2 hours
    Then rebuilding repaired the run
    And the run succeeds
    And the run went through "remind"
