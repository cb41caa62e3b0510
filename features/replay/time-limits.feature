@replay
Feature: A run that must finish in time fails at its deadline, and replays to the same end
  A workflow can say how long each run may take. A run still unfinished then
  fails at its deadline, whatever it was waiting for (a delay, the next
  attempt of a call), and nothing after the deadline is sent. The moment the
  deadline was seen to pass is recorded in the run's log, so the run replays
  to the same end with no clock at all. An operator who sends such a run back
  to work gives it its full time again.

  Background:
    Given the project "acme" with the workflow "order-follow-up", whose runs must finish within 30 minutes:
      | step   | type      | does                         | then   |
      | wait   | delay     | wait 1 hour                  | remind |
      | remind | http_call | POST the order to /reminders | done   |
      | done   | terminate | succeeded                    |        |
    And the project "acme" with the workflow "order-sync", whose runs must finish within 10 minutes:
      | step | type      | does                                                                   | then |
      | map  | transform | {id: order.id, total: order.sum}                                       | push |
      | push | http_call | POST the mapped order to /orders, up to 3 attempts, backing off 1 hour | done |
      | done | terminate | succeeded                                                              |      |

  Scenario: A follow-up still waiting when its time is up fails at its deadline and sends nothing
    Given a run of "order-follow-up" that is waiting in "wait"
    When the clock moves forward 31 minutes
    Then the run fails because "its deadline"
    And the order service was never called
    And the run replays exactly from its log

  Scenario: An order whose next attempt would come after its deadline fails without that attempt
    Given a run of "order-sync" that is between attempts of "push"
    When the clock moves forward 11 minutes
    Then the run fails because "passed while it was waiting to try step \"push\" again"
    And "push" was attempted 1 time
    And the run replays exactly from its log

  Scenario: A follow-up that finishes within its time is not touched by its deadline
    Given a run of "order-follow-up" that is waiting in "wait"
    When "dana@acme.example" skips "wait" because "the customer asked for the reminder now"
    And the clock moves forward 31 minutes
    Then the run succeeds
    And the order service received the order exactly once

  Scenario: A follow-up that ran out of time and is retried by an operator gets its full time again
    Given a run of "order-follow-up" that is waiting in "wait"
    And the clock moves forward 31 minutes
    And the run fails because "its deadline"
    When "dana@acme.example" skips "wait" because "the customer still wants the reminder"
    Then the run succeeds
    And the order service received the order exactly once
    And the run replays exactly from its log
